"""Where a full prune.py run's training time goes: python run_timing.py <prune.py arguments>. Times (GPU
synchronised before and after) the checkpoints, the pruning steps, the CUDA-graph captures and the evaluations,
then prints them with the run's results.json figures as one JSON line. Diagnosis only; prune.py is unchanged."""
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import prune  # noqa: E402

spent = {}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(name, fn):
    def wrapper(*args, **kwargs):
        sync()
        t0 = time.time()
        out = fn(*args, **kwargs)
        sync()
        spent[name] = [spent.get(name, [0, 0.0])[0] + 1, spent.get(name, [0, 0.0])[1] + time.time() - t0]
        return out
    return wrapper


prune.save_checkpoint = timed("checkpoints", prune.save_checkpoint)
prune.prune = timed("pruning_steps", prune.prune)
prune.evaluate = timed("evaluations", prune.evaluate)
prune.GraphedStep._capture = timed("graph_captures", prune.GraphedStep._capture)
rc = prune.main(sys.argv[1:])
out = Path(sys.argv[sys.argv.index("--out") + 1])
r = json.loads((out / "results.json").read_text())
keys = ("steps", "train_time_s", "teacher_time_s", "eval_time_s", "wall_time_s", "train_samples_per_s")
print(json.dumps({"rc": rc, "argv": sys.argv[1:], **{k: r.get(k) for k in keys},
                  "spent": {k: {"count": c, "s": round(s, 2)} for k, (c, s) in spent.items()}}))
