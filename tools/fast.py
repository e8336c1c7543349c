"""The fast path of prune.py on CUDA (--fast on, the default there): the reference Step wrapped, never changed.

FusedStep fuses the gradient mask of the linears into their backward and skips their weights' re-zeroing pass;
GraphedStep replays it from CUDA graphs. They own every GPU-only concession: a fused, capturable AdamW with the LR
in a device tensor, persistent gradients, autocast without its cast cache, batches padded to multiples of 32
tokens so that a few graphs cover every batch. prune.py loads this file only for a CUDA run with --fast on; the
parity tests pin it to the reference (bit for bit on a CPU; pruned weights exactly zero on CUDA).

It imports nothing from prune.py: it wraps the Step object it is handed (its model, optimizer, masked weights,
masks, loss and update). What it relies on: prune.prune(..., optimizer) zeroes the first moment (AdamW's m) of
every weight it prunes. FusedStep never re-zeroes the pruned linear weights after the optimizer step; their
gradient is masked to zero, so with m at zero AdamW's update m / (sqrt(v) + eps) is exactly zero and they stay
at zero. Without that clearing every pruned weight would drift (4,096 of 4,096 in the parity test's model).
"""
import contextlib
import functools

import torch
import torch.nn as nn


def fast_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> torch.optim.Optimizer:
    """The same AdamW (settings and state) over the same parameters, fused and capturable, the LR a device tensor
    that a replayed graph reads, zero_grad zeroing in place."""
    group = optimizer.param_groups[0]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    fast = torch.optim.AdamW(params, lr=torch.tensor(float(group["lr"]), device=device), betas=group["betas"],
                             eps=group["eps"], weight_decay=group["weight_decay"], fused=True, capturable=True)
    if optimizer.state:   # the state (moments, step counts) moves over; the fast optimizer keeps its own settings
        settings = [{k: v for k, v in g.items() if k != "params"} for g in fast.param_groups]
        fast.load_state_dict(optimizer.state_dict())
        for g, own in zip(fast.param_groups, settings):
            g.update(own)
        for state in fast.state.values():
            state["step"] = state["step"].to(device, torch.float32)
    fast.zero_grad = functools.partial(fast.zero_grad, set_to_none=False)   # gradients stay where graphs wrote them
    return fast


class CastAccumulate(torch.autograd.Function):
    """A weight as the forward uses it (autocast's dtype: bf16 on the fast path), whose backward adds the masked
    gradient straight into weight.grad (fp32): cast back, mask and accumulate fused into one addcmul_, where the
    eager loop spends three passes (autocast's cast backward, autograd's accumulation, masked_update's mask). The
    same gradient bit for bit (the mask is 0 or 1). Returns no gradient to autograd: it has already landed."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask):
        ctx.weight, ctx.mask = weight, mask  # a leaf parameter and a constant: no reference cycle
        device = weight.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        return weight.to(dtype, copy=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight = ctx.weight
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        if ctx.mask is None:
            weight.grad.add_(grad)
        else:
            weight.grad.addcmul_(grad, ctx.mask)
        return None, None


def fusable(model: nn.Module, weights: dict) -> dict:
    """{name: module} of the weights whose module is a plain nn.Linear (every encoder weight of BERT-family
    models); other masked weights (embeddings under the SMC recipe) keep masked_update's gradient mask."""
    modules = {}
    for name, w in weights.items():
        module = model.get_submodule(name.rpartition(".")[0])
        if type(module) is nn.Linear and module.weight is w:
            modules[name] = module
    return modules


@contextlib.contextmanager
def fused_weight_grads(modules: dict, masks: dict):
    """Within it, each of the nn.Linear modules (fusable) computes with CastAccumulate(weight, mask): its
    gradient arrives in weight.grad masked, so no masking pass is needed after the backward. The modules are
    their stock selves again on exit (evaluation, saving and state_dict never see the change)."""
    stock = {name: module.__dict__.get("forward") for name, module in modules.items()}
    for name, module in modules.items():
        module.forward = lambda x, m=module, mask=masks.get(name): torch.nn.functional.linear(
            x, CastAccumulate.apply(m.weight, mask), m.bias)
    try:
        yield
    finally:
        for name, module in modules.items():
            del module.forward
            if stock[name] is not None:
                module.forward = stock[name]


class FusedStep:
    """The fast path's step, eagerly, on any device: the reference Step's loss, its forward and backward with the
    gradients of the linears cast, masked and accumulated in one kernel (fused_weight_grads), then masked_update
    over the other masked weights only: no pass over the linears' weights, exact because prune(..., optimizer)
    zeroed their first moment, which a zero gradient keeps at zero (AdamW's update m / (sqrt(v) + eps) and the
    decay of a zero weight are 0). Bit for bit the reference's weights on the CPU
    (test_the_fast_path_step_gives_the_reference_weights_bit_for_bit); GraphedStep replays it."""

    def __init__(self, step, optimizer: torch.optim.Optimizer = None):
        self.step, self.model, self.weights, self.masks = step, step.model, step.weights, step.masks
        self.optimizer = optimizer or step.optimizer
        self.fused = fusable(step.model, step.weights)
        self.unfused_masks = {n: m for n, m in step.masks.items() if n not in self.fused}

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def micro(self, batch: dict) -> torch.Tensor:
        s = self.step
        with fused_weight_grads(self.fused, self.masks):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=s.bf16, cache_enabled=False):
                loss = s.loss_fn(batch) / s.grad_accum
            loss.backward()
        return loss.detach()

    def update(self) -> None:
        self.step.update(self.optimizer, self.unfused_masks)   # masked_update over the masks not fused above


class GraphedStep(FusedStep):
    """FusedStep's micro and update captured as CUDA graphs and replayed: one graph per batch shape for forward
    and backward, one for the update. Inputs are copied into static buffers; pruning writes the mask and
    optimizer tensors in place, so the graphs read the new masks."""
    pad_multiple = 32

    def __init__(self, step, device: torch.device):
        super().__init__(step, fast_optimizer(step.optimizer, device))
        self.device = device
        self.graphs, self.static, self.losses, self.update_graph = {}, {}, {}, None
        self.pool = torch.cuda.graph_pool_handle()
        for p in step.params:  # persistent gradients: the backward graphs accumulate into them in place
            p.grad = torch.zeros_like(p)
        opt = self.optimizer
        if not opt.state:  # AdamW's state must exist before capture: one step with zero gradients and LR 0
            lr = opt.param_groups[0]["lr"].clone()
            self.set_lr(0.0)
            opt.step()
            self.set_lr(float(lr))
            for state in opt.state.values():
                state["step"].zero_()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:   # in place: the graphs read this tensor
            group["lr"].fill_(lr)

    def micro(self, batch: dict) -> torch.Tensor:
        key = tuple(batch["input_ids"].shape)
        if key not in self.graphs:
            self._capture(key, batch)
        for k, v in batch.items():
            self.static[key][k].copy_(v, non_blocking=True)
        self.graphs[key].replay()
        return self.losses[key]

    def _capture(self, key, batch: dict) -> None:
        static = {k: v.clone() for k, v in batch.items()}
        grads = [p.grad.clone() for p in self.step.params]
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuBLAS handles, autotuning
                FusedStep.micro(self, static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            loss = FusedStep.micro(self, static)
        with torch.no_grad():  # undo the gradients and random draws of warm-up and capture
            for p, g in zip(self.step.params, grads):
                p.grad.copy_(g)
        torch.cuda.set_rng_state(rng, self.device)
        self.graphs[key], self.static[key], self.losses[key] = graph, static, loss

    def update(self) -> None:
        if self.update_graph is None:
            self.update_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.update_graph, pool=self.pool):  # recorded, not run
                FusedStep.update(self)
        self.update_graph.replay()
