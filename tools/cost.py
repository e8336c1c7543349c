"""GPU time of planned runs, from measured rates: `bash run.sh --dry-run` pipes its command lines here.

Reads lines "[done] python prune.py ARGS --out OUT" on stdin and prints each with its optimizer steps and estimated
H200 time, then the total of the lines read. Steps come from the run's resolved config (prune.resolve_config) and
its training set's size: the rows of --data_dir's train file where it exists, else the hub's. BERT-base and
RoBERTa-large: a step's time from tools/bench.py on one H200 (torch 2.11, CUDA graphs, the GMP* step with masks and
KD; SQuAD's times STRICT_SLOWDOWN under --deterministic strict), plus a checkpoint at every LR-cycle end and every
checkpoint_minutes at its measured cost; teachers' logits and evaluations are not counted (a few percent of a run).
MiniLM-L6 (the mini stage): whole runs measured on the H200, 3-4 at a time, per task (SQuAD's on an H100).
"""
import gzip
import json
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prune  # noqa: E402

# Training rows on the hub (SQuAD: features at length 384, stride 128: 1.012 a question).
TRAIN_ROWS = {"squad": 88_641, "mnli": 392_702, "qqp": 363_846, "sst2": 67_349, "cola": 8_551, "mrpc": 3_668,
              "stsb": 5_749, "qnli": 104_743, "rte": 2_490, "wnli": 635, "commonsense_qa": 9_741,
              "winogrande": 40_398}
SQUAD_FEATURES_PER_QUESTION = 88_641 / 87_599
# Milliseconds per optimizer step, measured (tools/bench.py step, on_gmp; results/h200/HISTORY.md, 2026-11-29-5157fe9):
# BERT-base 32 x 128 (GLUE; the mean of three runs, an upper bound: GLUE batches are padded to their longest
# row), 16 x 384 (SQuAD), RoBERTa-large 16 x 5 x 80 (CSQA, as 80 rows of 80 tokens). WinoGrande's 16 x 2 x 80 is
# scaled from CSQA by rows (2/5), not measured.
STEP_MS = {"glue": 12.50, "squad": 17.65, "commonsense_qa": 47.69, "winogrande": 47.69 * 2 / 5}
# Seconds of training a checkpoint costs (weights, AdamW's moments, bool masks), written synchronously:
# BERT-base 1.9 (five checkpoints of a 10,000-row run took 9.50 s; results/h200/HISTORY.md, 2026-11-29-f681ae6);
# RoBERTa-large scaled by parameters (355M / 110M), not measured.
CHECKPOINT_S = {"bert-base": 1.9, "roberta-large": 1.9 * 355 / 110}
# MiniLM-L6 whole runs on one H200 (bash run.sh mini, JOBS_PER_GPU 3-4; results/mini/): per task, the training
# samples/s of a run and its seconds outside training (loading, tokenizing, the teacher's logits, evaluations,
# graph capture), means over its finished runs (GMP* where measured, else its teacher); a task not measured counts
# as SST-2. Runs shared the GPU 3-4 at a time: 3,486 s of run time finished in 1,241 s of the GPU's time, so a
# run costs its time / MINILM_SHARING of GPU time.
MINILM_RUNS = {"sst2": (3_422.0, 16.0), "commonsense_qa": (1_317.0, 16.0), "winogrande": (2_608.0, 21.0),
               "squad": (680.0, 23.0), "cola": (4_976.0, 7.0), "mrpc": (2_066.0, 8.0), "rte": (1_788.0, 8.0),
               "stsb": (3_421.0, 10.0)}
MINILM_SHARING = 3_486 / 1_241
# SQuAD's entry is the split's runs under --deterministic strict (run.sh mini's mode for it), fitted to what they
# cost on one H100 (results/h200/HISTORY.md, 2026-12-08-f6f7b33): 6 and 9 GMP* students side by side took 320 s and
# 492 s of the GPU, 53-55 s a run, (87,520 / 680 + 23) / MINILM_SHARING = 54 s. (An H200 is faster: an upper bound.)
# --deterministic strict (prune.py's default) takes attention's backward off cuDNN. Alone on one H100 the MiniLM-L6
# SQuAD-split teacher trained at 1,598 samples/s under strict (2026-12-08-f6f7b33) and 1,649 under on
# (2026-12-07-b39311e). Applied to BERT-base's SQuAD runs under strict (not measured there); the other tasks'
# shorter sequences count as under on (not measured).
STRICT_SLOWDOWN = {"squad": 1_649 / 1_598}


def train_rows(task: str, data_dir: str) -> int:
    """Rows of the run's training set: its local train file's lines where there is one, else the hub's."""
    for name in ("train.jsonl", "train.jsonl.gz"):
        path = Path(data_dir) / name if data_dir else None
        if path is not None and path.is_file():
            with (gzip.open if name.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
                rows = sum(1 for line in f if line.strip())
            return round(rows * SQUAD_FEATURES_PER_QUESTION) if task == "squad" else rows
    return TRAIN_ROWS[task]


def model_family(model: str) -> str:
    """minilm, bert-base or roberta-large, by the hidden size of a local model's config, else by name."""
    path = Path(prune.resolve_model_path(model)) / "config.json"
    if path.is_file():
        hidden = json.loads(path.read_text()).get("hidden_size", 768)
        return {384: "minilm", 1024: "roberta-large"}.get(hidden, "bert-base")
    return "roberta-large" if "large" in model else "minilm" if "minilm" in model.lower() else "bert-base"


def estimate(args: list) -> tuple:
    """(optimizer steps, hours) of one prune.py command line."""
    cfg = prune.resolve_config(prune.parse_overrides(args))
    task = cfg["task"]
    rows = train_rows(task, cfg["data_dir"])
    if cfg["max_train_samples"]:
        rows = min(rows, cfg["max_train_samples"])
    if cfg["recipe"] == "oneshot":   # no training: the model loaded, pruned once and evaluated (about a minute)
        return 0, 1 / 60
    plan = prune.make_plan(cfg, rows // (cfg["batch_size"] * cfg["grad_accum"]))
    samples = plan.total_steps * cfg["batch_size"] * cfg["grad_accum"]
    family = model_family(cfg["model"])
    if family == "minilm":   # measured in run.sh mini's modes: no slowdown on top
        rate, other = MINILM_RUNS.get(task, MINILM_RUNS["sst2"])
        return plan.total_steps, (samples / rate + other) / MINILM_SHARING / 3600
    slowdown = STRICT_SLOWDOWN.get(task, 1.0) if cfg["deterministic"] == "strict" else 1.0
    ms = STEP_MS.get(task, STEP_MS["glue"]) * slowdown * cfg["grad_accum"] * cfg["batch_size"] / (
        16 if task in ("squad", "commonsense_qa", "winogrande") else 32)
    train_s = plan.total_steps * ms / 1e3
    timer = (int(train_s / (60 * cfg["checkpoint_minutes"])) if cfg["checkpoint_minutes"] > 0
             else plan.total_steps // cfg["log_every"])   # 0: a checkpoint at every logged step
    checkpoints = math.ceil(plan.total_steps / max(1, plan.cycle_steps)) + timer
    ckpt_s = CHECKPOINT_S["roberta-large" if family == "roberta-large" else "bert-base"]
    return plan.total_steps, (train_s + checkpoints * ckpt_s) / 3600


def main() -> int:
    total, runs = 0.0, 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        args = shlex.split(line.split("prune.py", 1)[1]) if "prune.py" in line else []
        if not args:
            print(line)
            continue
        steps, hours = estimate(args)
        if not line.startswith("[done]"):
            total, runs = total + hours, runs + 1
        print(f"{line}   # {steps} steps, {hours:.2f} h")
    print(f"# to run: {runs} runs, about {total:.1f} H200-hours (tools/cost.py: measured rates x steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
