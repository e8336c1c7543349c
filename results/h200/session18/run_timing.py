"""Where a full prune.py run's training time goes: python run_timing.py [--sync] <prune.py arguments>. Times (GPU
synchronised before and after) the checkpoint snapshots (the pause a checkpoint costs training), the waits for
a previous write, the pruning steps, the CUDA-graph captures and the evaluations, then prints them with the
run's results.json figures as one JSON line. --sync waits for every write at once, as prune.py did before its
checkpoints were written behind training. Diagnosis only; prune.py is unchanged."""
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


def timed(name, fn, gpu_sync=True):
    def wrapper(*args, **kwargs):
        if gpu_sync:
            sync()
        t0 = time.time()
        out = fn(*args, **kwargs)
        if gpu_sync:
            sync()
        spent[name] = [spent.get(name, [0, 0.0])[0] + 1, spent.get(name, [0, 0.0])[1] + time.time() - t0]
        return out
    return wrapper


argv = sys.argv[1:]
synchronous = "--sync" in argv
if synchronous:
    argv.remove("--sync")
    save = prune.CheckpointWriter.save

    def save_and_wait(self, *args, **kwargs):
        save(self, *args, **kwargs)
        self.wait()
    prune.CheckpointWriter.save = save_and_wait
prune.checkpoint_state = timed("checkpoint_snapshots", prune.checkpoint_state)
prune.CheckpointWriter.save = timed("checkpoints_in_loop", prune.CheckpointWriter.save)
prune.write_checkpoint = timed("checkpoint_writes_in_thread", prune.write_checkpoint, gpu_sync=False)
prune.prune = timed("pruning_steps", prune.prune)
prune.evaluate = timed("evaluations", prune.evaluate)
prune.GraphedStep._capture = timed("graph_captures", prune.GraphedStep._capture)
rc = prune.main(argv)
out = Path(argv[argv.index("--out") + 1])
r = json.loads((out / "results.json").read_text())
keys = ("steps", "train_time_s", "teacher_time_s", "eval_time_s", "wall_time_s", "train_samples_per_s")
print(json.dumps({"rc": rc, "sync": synchronous, "argv": argv, **{k: r.get(k) for k in keys},
                  "spent": {k: {"count": c, "s": round(s, 2)} for k, (c, s) in spent.items()}}))
