"""Schedules of GMP*, as pure functions of the optimizer step, and the Plan of a run built from them.

Kurtic, Hoefler, Alistarh, "How to Prune Your Language Model" (CPAL 2024), Appendix A: a cubic sparsity
schedule whose first pruning step jumps to 70%, ten pruning steps per epoch, no pruning in the first
(dense) and last (masks fixed) LR cycle, and an LR that decays linearly from 1e-4 to 1e-6 within each
2-epoch cycle and is rewound at the start of the next. Time is counted in optimizer steps everywhere.
No value of the recipe lives here: every argument is explicit (prune.RECIPES holds the paper's values).
"""
import dataclasses
import functools
import math
from typing import Callable


def sparsity_at(step: int, *, target: float, start_step: int, end_step: int, initial: float) -> float:
    """Cubic sparsity schedule with an initial jump (Zhu & Gupta 2017; Kurtic et al. 2024, Appendix A).

    s(t) = s_f + (s_i - s_f) * (1 - (t - start) / (end - start))**3 on [start, end]; 0 before, s_f after.
    The first step is capped at the target, so a 60% run starts at 60%, not 70%.
    """
    if step < start_step:
        return 0.0
    if step >= end_step:
        return target
    initial = min(initial, target)
    progress = (step - start_step) / (end_step - start_step)
    return target + (initial - target) * (1.0 - progress) ** 3


def lr_at(step: int, *, cycle_steps: int, lr_max: float, lr_min: float) -> float:
    """Cyclic linear LR (Kurtic et al. 2024, Appendix A): lr_max -> lr_min within each cycle, rewound to
    lr_max at the start of every cycle. No warmup."""
    pos = (step % cycle_steps) / cycle_steps
    return lr_max - (lr_max - lr_min) * pos


def warmup_linear_lr(step: int, *, total_steps: int, warmup_steps: int, lr_max: float, lr_min: float) -> float:
    """Linear warmup from 0 to lr_max, then linear decay to lr_min at total_steps: the standard
    fine-tuning schedule (BERT) and fairseq's polynomial_decay with power 1 (SMC-Bench)."""
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr_max - (lr_max - lr_min) * min(1.0, progress)


def cyclic_warmup_lr(step: int, *, cycle_steps: int, warmup_steps: int, lr_max: float, lr_min: float) -> float:
    """The cyclic LR with a linear warmup at the start of every cycle (Kurtic et al. 2024, Appendix B: tried, no
    gain): within each cycle, warmup_linear_lr from 0 to lr_max over warmup_steps, then down to lr_min."""
    return warmup_linear_lr(step % cycle_steps, total_steps=cycle_steps, warmup_steps=warmup_steps, lr_max=lr_max,
                            lr_min=lr_min)


def scaled_epochs(target: float, base_epochs: int) -> int:
    """Training budget scaled with the target sparsity (guideline 2 of Kurtic et al. 2024).

    The rule: a budget of 5 dense fine-tuning schedules up to 10x compression (90% sparsity), then 3 times
    more for every further 10/3x of compression: 5 schedules at 90%, 15 at 97%, 45 at 99.1%. It is the
    paper's two budgets (10 epochs at 90%, 30 at 97% for a 2-epoch base) joined by the observation behind
    them: recovery time grows about in proportion to the compression ratio 1/(1 - s) (x3.3 from 90% to
    97%, x3 in budget). A dense run (s = 0) needs only the base schedule.
    """
    if target <= 0.0:
        return base_epochs
    compression = 1.0 / (1.0 - target)
    steps_past_90 = math.log(compression / 10.0) / math.log(10.0 / 3.0)
    k = max(0, math.ceil(steps_past_90 - 1e-9))  # the tolerance keeps 97% (float 33.33...) on its tier
    return base_epochs * 5 * 3 ** k


def pruning_steps(start_step: int, end_step: int, n_intervals: int) -> list[int]:
    """The optimizer steps at which masks are recomputed: n_intervals + 1 points evenly spaced from
    start_step to end_step inclusive, so the last one is end_step whatever the step count."""
    if end_step <= start_step or n_intervals <= 0:
        return [end_step]
    return sorted({start_step + round(i * (end_step - start_step) / n_intervals) for i in range(n_intervals + 1)})


def gmp_phases(*, epochs: int, base_epochs: int, steps_per_epoch: int, prune_per_epoch: int) -> dict:
    """The GMP* timeline in optimizer steps: dense first cycle, pruning, masks fixed in the last cycle.

    Returns total_steps, cycle_steps (one LR cycle = base_epochs), start_step, end_step and the pruning
    steps (prune_per_epoch per epoch of the pruning window, the last one on end_step). ValueError unless
    epochs is a multiple of base_epochs with room for a dense, a pruning and a fixed cycle.
    """
    if epochs % base_epochs or epochs < 3 * base_epochs:
        raise ValueError(f"epochs={epochs} cannot hold the dense, pruning and fixed phases: GMP* needs a multiple "
                         f"of base_epochs={base_epochs} and at least {3 * base_epochs} (one dense, one pruning, "
                         "one fixed cycle)")
    cycle_steps = base_epochs * steps_per_epoch
    total_steps = epochs * steps_per_epoch
    start_step, end_step = cycle_steps, total_steps - cycle_steps
    n = prune_per_epoch * (epochs - 2 * base_epochs)
    return dict(total_steps=total_steps, cycle_steps=cycle_steps, start_step=start_step, end_step=end_step,
                prune_steps=pruning_steps(start_step, end_step, n))


@dataclasses.dataclass
class Plan:
    """The timeline of a run, in optimizer steps: when to prune, to what sparsity, at what LR."""
    total_steps: int
    steps_per_epoch: int
    cycle_steps: int                        # one LR cycle; evaluations and checkpoints at every cycle end
    prune_steps: list                       # the steps at which the masks are recomputed
    lr_at: Callable[[int], float]           # step -> learning rate
    sparsity_at: Callable[[int], float]     # step -> sparsity of the masks recomputed at that step


def gmp_star_plan(*, target: float, epochs: int, base_epochs: int, steps_per_epoch: int, prune_per_epoch: int,
                  initial_sparsity: float, lr: float, lr_min: float, lr_schedule: str = "cycles",
                  warmup: float = 0.0) -> Plan:
    """Kurtic et al. 2024, Appendix A: a dense first cycle, then prune_per_epoch cubic pruning steps per epoch
    (the first to initial_sparsity), masks fixed in the last cycle; LR lr -> lr_min rewound every cycle.
    Appendix B's rejected alternatives: lr_schedule "linear" (one decay over the whole run), and warmup (steps,
    or a fraction of a cycle when below 1) at the start of every cycle."""
    if target > 0:
        p = gmp_phases(epochs=epochs, base_epochs=base_epochs, steps_per_epoch=steps_per_epoch,
                       prune_per_epoch=prune_per_epoch)
    else:   # dense: the LR cycles alone, any number of epochs
        p = dict(total_steps=epochs * steps_per_epoch, cycle_steps=base_epochs * steps_per_epoch, start_step=0,
                 end_step=0, prune_steps=[])
    warmup_steps = round(warmup * p["cycle_steps"]) if 0 < warmup < 1 else int(warmup)
    if lr_schedule == "linear":
        lr_fn = functools.partial(warmup_linear_lr, total_steps=p["total_steps"], warmup_steps=warmup_steps,
                                  lr_max=lr, lr_min=lr_min)
    elif warmup_steps > 0:
        lr_fn = functools.partial(cyclic_warmup_lr, cycle_steps=p["cycle_steps"], warmup_steps=warmup_steps,
                                  lr_max=lr, lr_min=lr_min)
    else:
        lr_fn = functools.partial(lr_at, cycle_steps=p["cycle_steps"], lr_max=lr, lr_min=lr_min)
    return Plan(p["total_steps"], steps_per_epoch, p["cycle_steps"], p["prune_steps"], lr_fn,
                functools.partial(sparsity_at, target=target, start_step=p["start_step"], end_step=p["end_step"],
                                  initial=initial_sparsity))


def linear_plan(*, target: float, total_steps: int, steps_per_epoch: int, warmup_steps: int, lr: float,
                lr_min: float, prune_window: tuple = None) -> Plan:
    """Linear warmup and decay (dense fine-tuning; SMC-Bench's polynomial_decay), and SMC-Bench's pruning: cubic
    from 0 at prune_window[0] to the target at prune_window[1] (fractions of the run), at every
    prune_window[2]-th update (None: a dense run). One evaluation cycle per epoch."""
    start, end, every = (round(prune_window[0] * total_steps), round(prune_window[1] * total_steps),
                         prune_window[2]) if prune_window else (0, 0, 1)
    steps = [t for t in range(max(1, start), end) if t % every == 0] if target > 0 else []
    return Plan(total_steps, steps_per_epoch, steps_per_epoch, steps,
                functools.partial(warmup_linear_lr, total_steps=total_steps, warmup_steps=warmup_steps, lr_max=lr,
                                  lr_min=lr_min),
                functools.partial(sparsity_at, target=target, start_step=start, end_step=end, initial=0.0))
