"""GMP*: gradual magnitude pruning of BERT-family encoders, as in Kurtic, Hoefler, Alistarh, "How to Prune
Your Language Model: Recovering Accuracy on the Sparsity May Cry Benchmark" (CPAL 2024).

Read it like the paper. Sections 1-6 are the whole algorithm, ending with `train` and its batches: the recipe
as data, the timeline of a run, the masks, the masked update, the loss, the step and the loop. Section 7 wires a
run around it: the config becomes the plan, the step and the teacher's cached logits, and the loop runs with
its monitor. Below them: the configuration, evaluation, the end of a run and the command line. schedule.py holds
the schedules and the Plan, kd.py the distillation loss; tasks.py the tasks, their data, encodings, metrics and
models; folders.py the run folder, its lock, checkpoints and the saved model (both only move bytes); tools/fast.py
the CUDA-graph fast path (it wraps the reference Step, never changes it); tools/ also holds inference, the
benchmarks and the report.

    python prune.py --task sst2 --recipe dense --out runs/teacher-sst2            # a dense teacher
    python prune.py --task sst2 --teacher runs/teacher-sst2/model --sparsity 0.9 --out runs/sst2-90
"""
import argparse
import contextlib
import functools
import json
import math
import os
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
from folders import (  # noqa: F401 (re-exported: prune.OPERATIONAL, ... as before the split)
    atomic_save, check_out_dir, checkpoint_state, claim_out_dir, config_hash, FolderBusy, Interrupted,
    latest_checkpoint, load_checkpoint, load_optimizer_state, lock_run_folder, Meter, open_log, OPERATIONAL, read_json,
    save_compressed, save_model, stack_versions, stop_on_signals, STOP_SIGNAL, TrainingError, unlock_unclaimed,
    weights_sha256, write_checkpoint, write_json, write_jsonl)
from tasks import (  # noqa: F401 (re-exported: prune.MINILM_HUB, ... as before the split)
    _confusion, _pad, accuracy, auto_class, average_ranks, check_label_names, check_labels, check_teacher,
    encode, encode_squad, example_rows, f1_binary, files_task, first_line, generic_labels, glue, head_kwargs,
    is_regression, label_ids, label_problem, load_config_and_tokenizer, load_file, load_model,
    load_rotten_tomatoes, load_splits, local_files, majority_rate, matthews, MINILM_HUB, multiple_choice_inputs,
    normalize_answer, OFFSET_POSITIONS, one_separator_pairs, PAIR, pearson, read_file, required_columns,
    resolve_model_path, spearman, split_names, squad_f1, squad_predictions, squad_question_scores, squad_scores,
    spec_of, task_metrics, task_spec, TASKS, usable_positions, UsageError)

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


def train(step: "Step", plan: "Plan", batches: Callable[[int], list], *, criterion: str, first_step: int = 0) -> None:
    """GMP* (Kurtic et al. 2024, Appendix A), from first_step to the end of the plan: at each pruning step the
    masks are recomputed at the plan's sparsity, each step runs at the plan's LR. batches(t) gives the
    micro-batches of step t. A run's loop (run_loop, section 7) is this loop with its log lines."""
    prune_steps = set(plan.prune_steps)
    for t in range(first_step, plan.total_steps):
        if t in prune_steps:
            prune(step.weights, step.masks, plan.sparsity_at(t), criterion, step.optimizer)
        step.set_lr(plan.lr_at(t))
        for b in batches(t):
            step.micro(b)
        step.update()


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
#    batch["rows"]), then the run's loop: section 6's train written out with its log lines, evaluations at every
#    cycle end and checkpoints. What it calls below this section only moves bytes: data, models, the run folder
#    (folders.Meter: the loop's counters, log.jsonl and checkpoints), files.

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
    if device.type == "cuda" and cfg["deterministic"] != "off":
        deterministic_cuda(strict=cfg["deterministic"] == "strict")
    torch.manual_seed(cfg["seed"])
    data = prepare_data(cfg)
    steps_per_epoch = len(make_batches(data.train["lengths"], cfg["batch_size"], seed=cfg["seed"])) // cfg["grad_accum"]
    if steps_per_epoch < 1:
        raise UsageError(f"{len(data.train['lengths'])} training rows make no full batch of "
                         f"{cfg['batch_size']} x {cfg['grad_accum']}")
    plan = make_plan(cfg, steps_per_epoch)
    model = load_model(data.model_path, data.spec, data.model_config).to(device).train()
    check_model(cfg, model, data, device)
    teacher = prepare_teacher(cfg, data, out, state, device, log)
    claim_out_dir(out, state)   # every input checked: from here on the folder is this run's
    write_json(out / "config.json", cfg)
    if teacher.computed:
        atomic_save({"logits": teacher.logits.cpu(), "metrics": teacher.metrics}, out / "teacher_logits.pt")
    if cfg["recipe"] == "oneshot":
        return one_shot(cfg, out, model, data, plan, teacher, device, t_start)

    spec = data.spec
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
    log(f"{cfg['task']}: {len(data.train['lengths'])} train rows, {steps_per_epoch} steps/epoch, {plan.total_steps} "
        f"steps, target sparsity {cfg['sparsity']}, {len(plan.prune_steps)} pruning steps, device {device}"
        f"{' (CUDA graphs)' if fast else ''}")
    batches = batch_source(data.train, batch_size=cfg["batch_size"], grad_accum=cfg["grad_accum"], seed=cfg["seed"],
                           steps_per_epoch=steps_per_epoch, multiple=fast.GraphedStep.pad_multiple if fast else 8,
                           device=device)
    meter = Meter(out, device, first_step, stats, teacher.time_s)
    run_loop(cfg, step, plan, batches, data.evals, device, meter, first_step, log)
    meter.close()
    return finish(cfg, out, model, data, step, plan, teacher, meter.totals(), device, t_start)


def run_loop(cfg: dict, step: Step, plan, batches: Callable, evals: dict, device: torch.device, meter: Meter,
             first_step: int, log: Callable) -> None:
    """The run's loop, top to bottom: section 6's train (prune at the plan's steps, the plan's LR, the loss
    forward and backward, masked_update), then every log_every steps a log line, at each cycle end an
    evaluation, a checkpoint at cycle ends, every checkpoint_minutes and on a scheduler's signal (then exit 4).
    On the fast path step.micro and step.update replay CUDA graphs (tools/fast.py)."""
    prune_steps, criterion, last_checkpoint = set(plan.prune_steps), cfg.get("criterion", "global"), time.time()
    for t in range(first_step, plan.total_steps):
        if t in prune_steps:
            prune(step.weights, step.masks, plan.sparsity_at(t), criterion, step.optimizer)  # cubic, from 70%
        step.set_lr(plan.lr_at(t))                            # 1e-4 -> 1e-6, rewound every cycle
        loss = sum(step.micro(b) for b in batches(t))         # student_loss (section 5): forward and backward
        step.update()                                         # masked_update (section 4)
        done = t + 1
        meter.add(done, loss, cfg["batch_size"] * cfg["grad_accum"])
        cycle_end = done % plan.cycle_steps == 0 or done == plan.total_steps
        if done % cfg["log_every"] and not cycle_end:
            continue
        if meter.nonfinite_step() >= 0:
            raise meter.error(f"non-finite loss at step {meter.nonfinite_step()}; stopped before writing anything "
                              "from it")
        so_far = meter.totals()
        entry = {"step": done, "epoch": round(done / plan.steps_per_epoch, 3), "lr": plan.lr_at(done - 1),
                 "sparsity": sparsity_of(step.masks.values()), "loss": meter.mean_loss(),
                 "samples_per_s": so_far["samples"] / max(so_far["train_time_s"], 1e-9)}
        if cycle_end:
            entry["eval"] = meter.timed(evaluate, step.model, task_spec(cfg), evals, device, cfg["eval_batch_size"])
        meter.write(entry, plan.total_steps, log)
        stopping = STOP_SIGNAL["name"]
        if cycle_end or stopping or time.time() - last_checkpoint > 60 * cfg["checkpoint_minutes"]:
            moved = pruned_nonzero(step.model, step.masks)    # the invariant of the masked update, checked cheaply
            if moved:
                raise meter.error(f"{moved} pruned weights are not zero at step {done}")
            meter.checkpoint(done, step, device, cfg["keep_checkpoints"])
            last_checkpoint = time.time()
        if stopping and done < plan.total_steps:
            raise Interrupted(f"{stopping} at step {done}/{plan.total_steps}: checkpoint written; the same command "
                              "resumes the run")


def one_shot(cfg: dict, out: Path, model: nn.Module, data, plan, teacher, device: torch.device, t_start: float) -> dict:
    """Guideline 1's test (recipe oneshot): the masks of one magnitude pruning step at the target, applied to the
    (fine-tuned) model, then evaluated and saved as any run; no step is trained."""
    weights = prunable(model, cfg["scope"])
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    prune(weights, masks, plan.sparsity_at(0), cfg["criterion"])
    timing = dict(samples=0, train_time_s=0.0, eval_time_s=0.0, teacher_time_s=0.0)
    return finish(cfg, out, model, data, argparse.Namespace(weights=weights, masks=masks), plan, teacher, timing,
                  device, t_start)


def deterministic_cuda(strict: bool = False) -> None:
    """The same command gives the same bytes on one GPU kind: deterministic kernels and a fixed cuBLAS workspace.
    'strict' (the default) makes every op deterministic or an error, so attention leaves cuDNN's backward for a
    deterministic one. 'on' only warns where torch has none: cuDNN's attention backward, which gives a SQuAD run
    (384 tokens) other bytes each time, though CSQA's and SST-2's reproduce (the GPU test retrains teachers twice)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=not strict)


def check_model(cfg: dict, model: nn.Module, data, device: torch.device) -> None:
    """Before the folder is claimed: a target above 0 finds weights to prune in the scope, and one forward and
    backward pass on a first batch runs (an error of the model becomes one line, with nothing written). The
    random state is restored after it and the gradients cleared: the run computes what it would without it."""
    scope = cfg.get("scope", "encoder")
    if cfg["sparsity"] > 0 and not prunable(model, scope):
        raise UsageError(f"model '{cfg['model']}' ({model.__class__.__name__}) has no weight matrix to prune in scope "
                         f"'{scope}' (nn.Linear or kernel-1 nn.Conv1d in its layer stacks)")
    grouped = [n for n, m in model.named_modules() if type(m).__name__ == "GroupedLinearLayer"]
    if cfg["sparsity"] > 0 and grouped:   # ConvBERT's num_groups > 1: weights that are no nn.Linear
        raise UsageError(f"model '{cfg['model']}' has grouped linear layers ({grouped[0]}, ...) that no mask reaches: "
                         "the run would miss its target sparsity; take a checkpoint with num_groups 1")
    kind = data.spec["kind"]
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
    check_teacher(data.spec, config, tok, data.tokenizer, cfg["teacher"])
    cache, sha = out / "teacher_logits.pt", weights_sha256(path)
    if state in ("resume", "restart") and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        return argparse.Namespace(logits=saved["logits"].to(device), metrics=saved["metrics"], time_s=0.0,
                                  computed=False, sha256=sha, peak=teacher_peak(saved["logits"], data.train))
    log(f"scoring the teacher {cfg['teacher']} and caching its logits on {len(data.train['lengths'])} training rows")
    t0 = time.time()
    logits, metrics = score_and_cache_teacher(path, data.spec, config, data.train, data.evals, device,
                                              cfg["eval_batch_size"])
    log("teacher: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return argparse.Namespace(logits=logits.to(device), metrics=metrics, time_s=time.time() - t0, computed=True,
                              sha256=sha, peak=teacher_peak(logits, data.train))


def score_and_cache_teacher(path: str, task, config, train_enc: dict, evals: dict, device: torch.device,
                            batch_size: int) -> tuple:
    """The teacher scored on the evaluation splits (its metrics go into results.json), then its outputs on
    every training row, computed once (eval mode, no dropout) and reused every epoch. A teacher with generic
    label names (LABEL_0, ...) scoring below the majority-class rate has another label order: refused."""
    spec = spec_of(task)
    teacher = load_model(path, spec, config).to(device)
    metrics = evaluate(teacher, spec, evals, device, batch_size)
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


# ==========================================================================================================
# 8. The configuration: run settings < the recipe < the task's changes < the flags, every one checked before
#    anything is loaded. It decides what a run computes (config.json and results.json record it).

RUN_DEFAULTS = dict(task="rotten_tomatoes", model="", teacher="", sparsity=0.0, recipe="gmp_star", out="",
                    seed=0, overwrite=False, data_dir="", max_train_samples=0, max_eval_samples=0,
                    device="auto", fast="on", deterministic="strict", grad_accum=1, eval_batch_size=128, checkpoint_minutes=10.0,
                    keep_checkpoints=2, log_every=50)
CHOICES = dict(scope=("encoder", "all"), criterion=("global", "layer"), fast=("on", "off"),  # the flags' choices too
               deterministic=("on", "off", "strict"), lr_schedule=("cycles", "linear"))     # (not scope's, criterion's)
DEFAULT_MODEL = "bert-base-uncased"


def resolve_config(overrides: dict) -> dict:
    """Run defaults < recipe < the task's recipe changes < the command line; then checked. A setting the chosen
    recipe or task does not use is refused rather than ignored."""
    cfg = dict(RUN_DEFAULTS)
    overrides, own = own_files(overrides)
    cfg.update({k: v for k, v in overrides.items() if k in ("task", "recipe") and v is not None})
    for key, known in (("task", TASKS), ("recipe", RECIPES)):
        if cfg[key] not in known and not (key == "task" and own):
            raise UsageError(f"unknown {key} '{cfg[key]}'; known: {', '.join(known)}")
    task = own or TASKS[cfg["task"]]
    cfg.update(recipe_defaults(task, cfg["recipe"]))
    if own:   # what the training file gave (files_task): recorded, so that a resumed run rebuilds the same spec
        cfg.update(train_file="", validation_file="", labels=own["labels"], text=own["text"])
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


def own_files(overrides: dict) -> tuple:
    """--train_file and --validation_file make the task 'files', whose spec the training file sets (files_task):
    (the overrides with task 'files', that spec), or (the overrides, None) without them."""
    files = [overrides.get(k) for k in ("train_file", "validation_file")]
    if not any(files) and overrides.get("task") != "files":
        return overrides, None
    if not all(files):
        raise UsageError("your own data needs both --train_file and --validation_file")
    if overrides.get("task") not in (None, "files") or overrides.get("data_dir"):
        raise UsageError("--train_file and --validation_file are your own task: leave out --task and --data_dir")
    return {**overrides, "task": "files"}, files_task(*files)


def recipe_defaults(task, recipe: str) -> dict:
    """The recipe's fields with the task's changes (and SQuAD's doc_stride): the defaults of a run."""
    spec = spec_of(task)
    fields = {**RECIPES[recipe], **TASK_RECIPES.get(spec["name"], {}).get(recipe, {})}
    return {**fields, "doc_stride": spec["doc_stride"]} if spec["kind"] == "qa" else fields


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
    for key, allowed in CHOICES.items():
        if key in cfg and cfg[key] not in allowed:
            raise UsageError(f"{key} must be {', '.join(map(repr, allowed[:-1]))} or '{allowed[-1]}', got '{cfg[key]}'")
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


# ==========================================================================================================
# 9. Evaluation and the end of a run: a model's outputs over a split in row order, the task's metrics (tasks.py),
#    the data a run trains on, the measured sparsity, and finish (the sparsity check, the saved model,
#    predictions.jsonl.gz, results.json).

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


def evaluate(model: nn.Module, task, evals: dict, device: torch.device, batch_size: int, rows: bool = False):
    """Metrics on every evaluation split {name: (encoding, dataset)}; the first split's keys are plain, the
    others' are suffixed with the split's name. rows=True: (metrics, every example's row (example_rows))."""
    metrics, examples = {}, []
    for i, (split, (enc, ds)) in enumerate(evals.items()):
        out = predict(model, enc, spec_of(task)["kind"], device, batch_size).numpy()
        metrics.update({k if i == 0 else f"{k}_{split}": v for k, v in task_metrics(task, out, enc, ds).items()})
        if rows:
            examples += example_rows(task, out, enc, ds, split)
    return (metrics, examples) if rows else metrics


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
    spec = task_spec(cfg)
    splits = load_splits(spec, cfg["data_dir"], cfg["max_train_samples"], cfg["max_eval_samples"])
    model_path, model_config, tokenizer = load_config_and_tokenizer(cfg["model"], "model")
    check_label_names(spec, model_config, f"model '{cfg['model']}'")
    max_length = min(int(cfg["max_length"]), usable_positions(model_config))
    enc = {s: encode(spec, ds, tokenizer, max_length, cfg.get("doc_stride")) for s, ds in splits.items()}
    return argparse.Namespace(train=enc.pop("train"), evals={s: (e, splits[s]) for s, e in enc.items()},
                              model_path=model_path, model_config=model_config, tokenizer=tokenizer, spec=spec)


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
    metrics, rows = evaluate(model, data.spec, data.evals, device, cfg["eval_batch_size"], rows=True)
    samples = timing.pop("samples")
    results = {
        "task": cfg["task"], "model": cfg["model"], "teacher": cfg["teacher"], "recipe": cfg["recipe"],
        "seed": cfg["seed"], "sparsity_target": cfg["sparsity"], "sparsity_scheduled": scheduled,
        **sparsity_report(model), "masked_sparsity": zeros / n if n else 0.0, "metric": data.spec["metric"],
        "metrics": metrics, "eval_rows": len(next(iter(data.evals.values()))[1]), "teacher_metrics": teacher.metrics,
        "teacher_sha256": teacher.sha256, "teacher_top_probability": teacher.peak,
        "epochs": plan.total_steps / plan.steps_per_epoch, "steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch, "pruning_steps": len(plan.prune_steps),
        # samples/s of the training loop, and of the run with the teacher's forward passes counted in
        "train_samples_per_s": samples / max(timing["train_time_s"], 1e-9),
        "run_samples_per_s": samples / max(timing["train_time_s"] + timing["teacher_time_s"], 1e-9),
        **timing, "wall_time_s": time.time() - t_start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "deterministic": "strict" if device.type == "cuda" and cfg["deterministic"] == "strict" else
                         device.type == "cpu" or torch.are_deterministic_algorithms_enabled(),
        "attention": getattr(model.config, "_attn_implementation", None),   # sdpa, or eager where a family lacks it
        "versions": stack_versions(), "config": cfg,
    }
    save_model(model, data.tokenizer, out, masks)
    write_jsonl(out / "predictions.jsonl.gz", rows)
    write_json(out / "results.json", results)
    for ckpt in out.glob("checkpoint-*.pt"):
        ckpt.unlink()
    return results


# ==========================================================================================================
# Plumbing: the command line: every run setting and recipe field is a --flag; an unset flag keeps the recipe's value.

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
    "deterministic": ("speed", "strict: every CUDA op deterministic (attention's backward included) or an error, so "
                               "a command gives the same bytes on one GPU kind; on: deterministic where torch has "
                               "such kernels, a warning where not (cuDNN attention's backward: faster, but SQuAD's "
                               "runs differ); off: torch's defaults. No effect on a CPU"),
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
            choices = CHOICES.get(name) if name in ("fast", "deterministic", "lr_schedule") else None
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
