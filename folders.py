"""The run folder of the GMP* reference (prune.py imports it and re-exports its names): whether a folder holds this
run (config_hash), the lock that keeps one writer per folder, the scheduler's signals, atomic checkpoints and their
resume, the files a run writes, and the saved model (the stock layout and compressed.safetensors). It moves bytes;
nothing here decides what a run computes.
"""
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from tasks import first_line, UsageError


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, a sparsity off its target, no readable checkpoint)."""
    word, status = "stopped", 1


# Settings that may change when an interrupted run is resumed.
OPERATIONAL = {"out", "device", "fast", "checkpoint_minutes", "keep_checkpoints", "log_every", "overwrite",
               "eval_batch_size"}


def config_hash(cfg: dict) -> str:
    kept = {k: v for k, v in sorted(cfg.items()) if k not in OPERATIONAL}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]



# ----------------------------------------------------------------------------------------------------------
# What a run computed on, recorded in results.json.

def stack_versions() -> dict:
    """The versions of the stack a run computed on (results.json, the model card; tools/pins.py pins them)."""
    import importlib.metadata
    return {name: importlib.metadata.version(name) for name in
            ("torch", "transformers", "datasets", "numpy", "tokenizers", "safetensors")}


def weights_sha256(path: str) -> str:
    """sha256 of a local model's weights (model.safetensors, else pytorch_model.bin): the teacher's identity."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(path) / name).is_file():
            digest = hashlib.sha256()
            with open(Path(path) / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            return digest.hexdigest()
    return ""



# ----------------------------------------------------------------------------------------------------------
# Run folders and checkpoints: nothing the user had is lost, and a killed run resumes where it stopped.

def check_out_dir(out: Path, cfg: dict) -> str:
    """What to do with the run folder, without writing anything: 'new', 'resume' (this same run, interrupted
    after a checkpoint), 'restart' (interrupted before one), 'finished' (this same run, done: nothing to do; a
    scheduler's twin that waited for it ends cleanly), or 'replace' (--overwrite). A file, another finished run or
    another run's folder is refused."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    old_cfg = read_json(out / "config.json")
    finished = (out / "results.json").exists()
    if old_cfg is not None and config_hash(old_cfg) == config_hash(cfg) and not cfg["overwrite"]:
        return "finished" if finished else "resume" if latest_checkpoint(out) else "restart"
    if not cfg["overwrite"]:
        what = ("a finished run (results.json)" if finished else
                "a run with other settings" if old_cfg is not None else "files that are not a run")
        raise UsageError(f"{out} already holds {what}; choose another --out, or pass --overwrite "
                         "to move it aside and start again")
    return "replace"


def claim_out_dir(out: Path, state: str) -> None:
    """Make the folder this run's: an old run moved aside ('replace'; nothing is deleted), or the half-written
    files of this run's interrupted try dropped."""
    if state == "replace":
        aside = out.with_name(f"{out.name}.replaced-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        out.rename(aside)
        print(f"moved the old {out} to {aside}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob("*.tmp"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


class Interrupted(RuntimeError):
    """SIGTERM or SIGUSR1 (a scheduler's notice before preemption or the time limit): the run wrote a checkpoint at
    its next log line and stopped; the same command resumes it."""
    word, status = "interrupted", 4


STOP_SIGNAL = {"name": None}   # set by the CLI's SIGTERM/SIGUSR1 handler, read by the run loop at each log line


def stop_on_signals() -> None:
    """The CLI's handler: note the signal and let the loop checkpoint at its next log line, then exit 4."""
    def note(signum, frame):
        STOP_SIGNAL["name"] = signal.Signals(signum).name
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, note)


class FolderBusy(RuntimeError):
    """The run folder is another live process's."""
    word, status = "busy", 3


def lock_run_folder(out: Path):
    """An exclusive kernel lock (flock) on <parent>/.<name>.lock, held until the returned file is closed or the
    process ends, however it ends: one writer per run folder, and nothing stale after a kill. The holder writes
    its PID and host into the file, so a refused process can name it. The folder's real path is locked, so a
    symbolic link to it is the same folder. PRUNE_NO_LOCK=1 runs without the lock where flock is unsupported."""
    out = Path(os.path.realpath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    f = open(path, "a+")
    try:
        if os.environ.get("PRUNE_NO_LOCK") != "1":
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not path.exists() or os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                f.close()   # a refused run removed this file as we opened it: lock the file now there
                return lock_run_folder(out)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise FolderBusy(f"{out} is in use by {holder}; nothing was written (one run per folder: let it finish, "
                         "or give another --out)") from None
    except OSError as e:
        f.close()
        raise UsageError(f"cannot lock {out} ({e.strerror or e}): this filesystem may not support flock; "
                         "PRUNE_NO_LOCK=1 runs without the one-writer guard") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def unlock_unclaimed(out: Path, created: list) -> None:
    """A run refused before it claimed its folder leaves nothing behind: its lock file (removed while still
    held) and the parent folders the lock file made go; a claimed folder keeps both."""
    real = Path(os.path.realpath(out))
    if real.exists():
        return
    with contextlib.suppress(FileNotFoundError):
        (real.parent / f".{real.name}.lock").unlink()
    for folder in created:   # deepest first, each only if empty
        with contextlib.suppress(OSError):
            folder.rmdir()


def latest_checkpoint(out: Path):
    ckpts = sorted(out.glob("checkpoint-*.pt"))
    return ckpts[-1] if ckpts else None


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary name, flushed to disk, then renamed: a kill leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list) -> None:
    """One JSON object a line, written aside and renamed into place; gzip-compressed (reproducibly: no time stamp
    in the header) when the name ends in .gz."""
    tmp = path.with_name(path.name + ".tmp")
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp.write_bytes(__import__("gzip").compress(text, mtime=0) if path.suffix == ".gz" else text)
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_state(done: int, step, stats: dict, device: torch.device) -> dict:
    """Everything a resumed run needs to continue exactly: weights, masks (as bool, a byte a weight), optimizer,
    step and the CPU and CUDA random states (and the run's counters); the data order is a function of
    (seed, epoch)."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"step": done, "model": step.model.state_dict(), "optimizer": step.optimizer.state_dict(),
            "masks": {n: m.bool() for n, m in step.masks.items()}, "rng": rng, "stats": stats}


def write_checkpoint(out: Path, state: dict, keep: int) -> None:
    """checkpoint-<step>.pt, written atomically (a kill leaves the previous one), then all but the newest `keep`
    removed."""
    atomic_save(state, out / f"checkpoint-{state['step']:09d}.pt")
    for old in sorted(out.glob("checkpoint-*.pt"))[:-keep]:
        old.unlink()


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """The state (moments, step counts) of state_dict; the optimizer keeps its own settings (lr, fused, ...)."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state_dict)
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)


def load_checkpoint(out: Path, model, optimizer, masks: dict, device: torch.device) -> tuple:
    """Restore the newest readable checkpoint in place (loaded on the CPU, then copied to each tensor's own
    device: random states stay CPU byte tensors)."""
    for candidate in sorted(out.glob("checkpoint-*.pt"), reverse=True):
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            break
        except Exception as e:
            print(f"skipping unreadable checkpoint {candidate.name}: {e.__class__.__name__}", file=sys.stderr)
    else:
        raise TrainingError(f"no readable checkpoint in {out}")
    model.load_state_dict(state["model"])
    load_optimizer_state(optimizer, state["optimizer"])
    for n, m in masks.items():   # masks hold no gradient: copied in place
        m.copy_(state["masks"][n])
    torch.set_rng_state(state["rng"]["cpu"])
    if device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return int(state["step"]), state["stats"]


def open_log(path: Path, first_step: int):
    """The JSON-lines log, cut back to the resumed step so no step is logged twice."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= first_step]
        path.write_text("".join(line + "\n" for line in keep))
    return open(path, "a")


class Meter:
    """The run loop's counters and its log.jsonl: the mean loss between log lines and the first step whose loss is
    not finite (both kept on the device and read only at log lines: no host synchronisation per step), samples and
    times over the whole run (resumed segments included), checkpoints and the errors that name the last good one."""

    def __init__(self, out: Path, device: torch.device, first_step: int, stats: dict, teacher_time: float):
        self.out, self.first_step, self.file = out, first_step, open_log(out / "log.jsonl", first_step)
        self.before = {**dict(samples=0, train_time_s=0.0, eval_time_s=0.0, teacher_time_s=0.0), **stats}
        self.before["teacher_time_s"] += teacher_time
        self.loss_sum = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss_count, self.samples, self.eval_time = 0, 0, 0.0
        self.t0 = time.time()

    def add(self, done: int, loss: torch.Tensor, samples: int) -> None:
        self.loss_sum += loss
        self.first_bad = torch.where(torch.isfinite(self.loss_sum) | (self.first_bad >= 0), self.first_bad,
                                     torch.full_like(self.first_bad, done - 1))
        self.loss_count += 1
        self.samples += samples

    def nonfinite_step(self) -> int:
        """The first step whose loss was not finite, -1 if none."""
        return int(self.first_bad)

    def mean_loss(self) -> float:
        """The mean loss since the last log line; starts the next mean."""
        loss = float(self.loss_sum) / self.loss_count
        self.loss_sum.zero_()
        self.loss_count = 0
        return loss

    def totals(self) -> dict:
        """Counters over the whole run, resumed segments included."""
        return {"samples": self.before["samples"] + self.samples,
                "eval_time_s": self.before["eval_time_s"] + self.eval_time,
                "train_time_s": self.before["train_time_s"] + time.time() - self.t0 - self.eval_time,
                "teacher_time_s": self.before["teacher_time_s"]}

    def timed(self, fn, *args):
        """fn(*args), its time counted as evaluation, not training."""
        t0 = time.time()
        result = fn(*args)
        self.eval_time += time.time() - t0
        return result

    def write(self, entry: dict, total_steps: int, log) -> None:
        """The log line: into log.jsonl and, with this process's ETA, to the console."""
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        done = entry["step"]
        eta = (time.time() - self.t0) / max(1, done - self.first_step) * (total_steps - done)   # this process's pace
        log(f"step {done}/{total_steps} epoch {entry['epoch']:.2f} lr {entry['lr']:.2e} sparsity "
            f"{entry['sparsity']:.3f} loss {entry['loss']:.4f} {entry['samples_per_s']:.0f} samples/s eta "
            f"{eta / 60:.1f} min" + "".join(f" | {k} {v:.4f}" for k, v in entry.get("eval", {}).items()))

    def checkpoint(self, done: int, step, device: torch.device, keep: int) -> None:
        try:
            write_checkpoint(self.out, checkpoint_state(done, step, self.totals(), device), keep)
        except OSError as e:
            raise self.error(f"writing a checkpoint failed: {e.__class__.__name__}: {first_line(e)}") from None

    def error(self, why: str) -> TrainingError:
        return TrainingError(f"{why}; last good checkpoint: {latest_checkpoint(self.out) or 'none'}")

    def close(self) -> None:
        self.file.close()



# ----------------------------------------------------------------------------------------------------------
# The saved model: model/ in the stock layout (zeros in place: it loads with AutoModelFor*.from_pretrained),
# beside it compressed.safetensors (the kept values and a bit-packed mask per pruned weight: the run's masks).
# tools/infer.py loads it back and runs pruned linears in CSR; tools/report.py writes the model card.

def save_model(model: nn.Module, tokenizer, out: Path, masks: dict) -> None:
    """model/, written aside and renamed into place."""
    tmp = out / "model.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_compressed(model, masks, tmp / "compressed.safetensors")
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    os.replace(tmp, out / "model")


def save_compressed(model: nn.Module, masks: dict, path: Path, dtype: torch.dtype = None) -> None:
    """A safetensors file of the model where each masked weight is stored as its kept values (row-major) and its
    mask, 8 weights a byte; every other tensor as it is. dtype (e.g. torch.float16) also rounds every floating
    tensor, halving the file; None keeps the weights bit for bit."""
    from safetensors.torch import save_file
    tensors, shapes = {}, {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        t = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        if name in masks:
            keep = masks[name].detach().cpu().bool()
            tensors[f"{name}.values"] = t[keep].contiguous()
            tensors[f"{name}.mask"] = torch.from_numpy(np.packbits(keep.numpy()))
            shapes[name] = list(t.shape)
        else:
            tensors[name] = t.contiguous().clone()
    # one metadata key: safetensors writes a map's keys in an order that changes from process to process
    save_file(tensors, str(path), metadata={"pruned_shapes": json.dumps(shapes, sort_keys=True)})
