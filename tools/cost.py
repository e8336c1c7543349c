"""GPU time of planned runs, from measured step rates: `bash run.sh --dry-run` pipes its command lines here.

Reads lines "[done] python prune.py ARGS --out OUT" on stdin and prints each with its optimizer steps and
estimated H200 time, then the total of the lines read. Steps come from the run's resolved config
(prune.resolve_config) and the training set's size on the hub; a step's time from tools/bench.py on one H200
(torch 2.11, CUDA graphs, the GMP* step with masks and KD; results/h200/session16/), plus a checkpoint at
every LR-cycle end and every 10 minutes, at its measured cost (results/h200/session18/). Teachers' logits and
evaluations are not counted (a few percent of a run).
"""
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prune  # noqa: E402

# Training rows on the hub (SQuAD: features at length 384, stride 128).
TRAIN_ROWS = {"squad": 88_641, "mnli": 392_702, "qqp": 363_846, "sst2": 67_349, "cola": 8_551, "mrpc": 3_668,
              "stsb": 5_749, "qnli": 104_743, "rte": 2_490, "wnli": 635, "commonsense_qa": 9_741,
              "winogrande": 40_398}
# Milliseconds per optimizer step, measured (tools/bench.py step, on_gmp; results/h200/session16): BERT-base
# 32 x 128 (GLUE; the mean of three runs, an upper bound: GLUE batches are padded to their longest row),
# 16 x 384 (SQuAD), RoBERTa-large 16 x 5 x 80 (CSQA, as 80 rows of 80 tokens). WinoGrande's 16 x 2 x 80 is
# scaled from CSQA by rows (2/5), not measured.
STEP_MS = {"glue": 12.50, "squad": 17.65, "commonsense_qa": 47.69, "winogrande": 47.69 * 2 / 5}
# Seconds of training a checkpoint costs (weights, AdamW's moments, bool masks): a snapshot to the CPU, then a
# thread writes it while training goes on. BERT-base 0.82: two 10,000-row runs in one call, 5 checkpoints each,
# training 29.71 s with writes behind training vs 35.09 s waiting for each write (9.50 s in writes):
# (29.71 - (35.09 - 9.50)) / 5 (results/h200/session18/call2); RoBERTa-large scaled by parameters (355M /
# 110M), not measured.
CHECKPOINT_S = {"bert-base": 0.82, "roberta-large": 0.82 * 355 / 110}


def estimate(args: list) -> tuple:
    """(optimizer steps, hours) of one prune.py command line: its steps, and a checkpoint at every cycle end
    and every checkpoint_minutes of training."""
    cfg = prune.resolve_config(prune.parse_overrides(args))
    task = cfg["task"]
    plan = prune.make_plan(cfg, TRAIN_ROWS[task] // (cfg["batch_size"] * cfg["grad_accum"]))
    ms = STEP_MS.get(task, STEP_MS["glue"]) * cfg["grad_accum"] * cfg["batch_size"] / (
        16 if task in ("squad", "commonsense_qa", "winogrande") else 32)
    train_s = plan.total_steps * ms / 1e3
    timer = (int(train_s / (60 * cfg["checkpoint_minutes"])) if cfg["checkpoint_minutes"] > 0
             else plan.total_steps // cfg["log_every"])   # 0: a checkpoint at every logged step
    checkpoints = math.ceil(plan.total_steps / plan.cycle_steps) + timer
    ckpt_s = CHECKPOINT_S["roberta-large" if task in ("commonsense_qa", "winogrande") else "bert-base"]
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
    print(f"# to run: {runs} runs, about {total:.1f} H200-hours (tools/cost.py: measured step rates x steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
