"""Speed benchmarks of the README: python tools/bench.py {pruning,step,profile,adam,trainer,sparse,save-random}.

  pruning   global magnitude masks over a BERT-base-shaped encoder (85M weights), exact, vs torch.kthvalue
  step      steady-state training steps: GMP* (masks + KD from cached logits) vs the same dense step, as
            --fast on / off runs them, and with the loss function compiled by torch.compile (an experiment
            prune.py does not ship); samples/s, TFLOP/s (config:bert-base, config:roberta-large: random weights)
  profile   the GPU kernel time of one GMP* step by kind (matmuls, attention, optimizer, casts, ...)
  adam      the AdamW step alone (as --fast on / off builds it), the encoder dense or 90% pruned (gradients,
            weights and first moments zero): is AdamW slower on zeros?
  trainer   the Hugging Face Trainer doing dense fine-tuning of the same model on SST-2 (needs accelerate);
            its whole-run rate and its steady rate after the first 20 steps
  save-random  --model config:bert-base --out DIR [--tokenizer minilm]: a random BERT-base-shaped classifier
            with a BERT tokenizer, for full runs of that shape with prune.py and Trainer (speed only)
  sparse    CPU inference of a pruned model, dense vs sparse (tools/infer.py), and file sizes

Each prints one JSON line. Training never imports this file.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prune  # noqa: E402
from tools import fast as fast_path, infer  # noqa: E402


FAST_MODES = ("on", "off", "compile")  # --fast of prune.py, and the torch.compile experiment


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_flops(model: nn.Module, batch: int, length: int) -> float:
    """FLOPs of one training step (forward + backward = 3 x forward): 2 per weight of every linear layer
    per token, plus the attention products (QK^T and AV: 4 * L^2 * hidden per sequence and layer)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    layers = len(prune.weight_groups(model)["encoder"]) // 6
    forward = 2 * linear * batch * length + 4 * layers * batch * length * length * model.config.hidden_size
    return 3.0 * forward


def classifier(model_path: str) -> nn.Module:
    """config:bert-base = BERT-base's shape with random weights (speed only); else a real model."""
    if model_path.startswith("config:"):  # BERT-base's or RoBERTa-large's shape
        from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig
        torch.manual_seed(0)
        config = {"config:bert-base": BertConfig(num_labels=2),
                  "config:roberta-large": RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24,
                                                       num_attention_heads=16, intermediate_size=4096,
                                                       max_position_embeddings=514, num_labels=2)}[model_path]
        return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    return prune.load_model(prune.resolve_model_path(model_path), "sst2")


def save_random(model_path: str, out: str, tokenizer: str = "minilm") -> dict:
    """A speed-only model folder prune.py and Trainer can load: config:bert-base's shape with random weights and
    a BERT tokenizer, by default MiniLM-L6's (BERT's uncased WordPiece, the 30,522 tokens of the shape's
    vocabulary). The tokenizer loads first: a failure leaves no half-written folder."""
    from transformers import AutoTokenizer
    if model_path != "config:bert-base":
        raise SystemExit(f"bench save-random: only config:bert-base has a tokenizer here, got {model_path}")
    if Path(out).exists() and any(Path(out).iterdir()):
        raise SystemExit(f"bench save-random: {out} is not empty; give a new folder")
    tok = AutoTokenizer.from_pretrained(prune.resolve_model_path(tokenizer))
    model = classifier(model_path)
    if len(tok) > model.config.vocab_size:
        raise SystemExit(f"bench save-random: {tokenizer}'s tokenizer has {len(tok)} tokens, more than the "
                         f"{model.config.vocab_size} rows of {model_path}'s embeddings")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"out": out}


def with_moments(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One AdamW step on small random gradients, so that every weight has non-zero moments before the masks
    come, as in a run (GMP* prunes first after its dense epoch); the gradients are then zeroed."""
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)   # in place: GraphedStep's gradients are persistent


def gmp_step(model_path: str, dev: torch.device, *, batch: int, masked: bool, fast: str, graphs: bool,
             teacher: bool = True) -> tuple:
    """(model, masks, step) of the student step of GMP* (KD from cached logits of 64 batches of rows, encoder
    masks at 90%) or the same dense step, built by prune.make_step with GMP*'s settings: the reference Step for
    --fast off, else the fast path (FusedStep, replayed from CUDA graphs when graphs); 'compile' compiles the loss
    function (forward, loss, backward), an experiment prune.py does not ship."""
    torch._dynamo.reset()
    model = classifier(model_path).to(dev).train()
    r = prune.RECIPES["gmp_star"]
    cache = torch.randn(64 * batch, 2, device=dev) if teacher else None
    step = prune.make_step(model, kind="classification", scope="encoder", pruned=masked, lr=r["lr"],
                           betas=(r["adam_beta1"], r["adam_beta2"]), eps=r["adam_eps"], weight_decay=r["weight_decay"],
                           max_grad_norm=r["max_grad_norm"], teacher_logits=cache, hardness=1.0 if teacher else 0.0,
                           temperature=r["temperature"], regression=False, grad_accum=1, bf16=dev.type == "cuda")
    if fast == "compile":
        step.loss_fn = torch.compile(step.loss_fn, dynamic=False)
    if fast != "off":   # prune.py's fast path: its fused, capturable AdamW, replayed from graphs or launched eagerly
        step = (fast_path.GraphedStep(step, dev) if graphs else
                fast_path.FusedStep(step, fast_path.fast_optimizer(step.optimizer, dev)))
    with_moments(model, step.optimizer)   # without it the pruned weights' m and v would be zero from the start
    prune.prune(step.weights, step.masks, 0.9, "global", step.optimizer)
    return model, step.masks, step


def random_batch(gen: torch.Generator, vocab: int, batch: int, length: int, i: int) -> dict:
    """Batch i of fixed shape: random tokens (above the special ones of a real vocabulary) and labels, teacher
    rows i * batch ... of the 64-batch cache."""
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (batch,), generator=gen),
            "rows": torch.arange(i * batch, (i + 1) * batch) % (64 * batch)}


def bench_step(model_path: str, *, batch: int, length: int, steps: int, masked: bool, fast: str,
               teacher: bool = True, device: str = "cuda" if torch.cuda.is_available() else "cpu") -> dict:
    """Steady-state training steps on fixed-shape random batches: the student step of GMP* (KD from cached
    logits, masks enforced) or the same dense step, as --fast on / off runs it, or 'compile': on, with the loss
    function compiled (forward, loss and backward; one compilation per shape). Returns samples/s and MFU."""
    dev = torch.device(device)
    model, masks, step = gmp_step(model_path, dev, batch=batch, masked=masked, fast=fast, graphs=fast != "off",
                                  teacher=teacher)
    gen = torch.Generator().manual_seed(0)

    def run(n):
        for i in range(n):
            step.micro(prune.to_device(random_batch(gen, model.config.vocab_size, batch, length, i), dev))
            step.update()

    t0 = time.time()
    run(5)  # warm-up (compilation, capture)
    sync(dev)
    warmup = time.time() - t0
    t0 = time.time()
    run(steps)
    sync(dev)
    dt = (time.time() - t0) / steps
    return {"samples_per_s": batch / dt, "step_ms": 1000 * dt, "tflops": train_flops(model, batch, length) / dt / 1e12,
            "warmup_s": warmup, "pruned_nonzero": prune.pruned_nonzero(model, masks)}


KERNEL_KINDS = [("matmul", r"gemm|cutlass|nvjet|xmma|sm90_|cublas"), ("attention", r"fmha|flash|sdpa|attention"),
                ("optimizer", r"FusedOpti|[Aa]dam"), ("foreach (clip, masks, zero_grad)", r"multi_tensor_apply"),
                ("triton (compiled, fused)", r"^triton"), ("layernorm", r"layer_norm|LayerNorm|GammaBeta"),
                ("dtype casts and copies", r"copy"), ("reductions (bias grads, norms)", r"reduce"),
                ("elementwise (adds, gelu, dropout, masks)", r"elementwise|gelu|dropout|masked_scale|Fill|Memset")]


def bench_profile(model_path: str, *, batch: int, length: int, fast: str) -> dict:
    """Where the GPU time of one GMP* step goes: kernel time per step by kind (torch.profiler over 5 steps):
    --fast on launches eagerly what the CUDA graphs replay (FusedStep, fused AdamW); off is the eager reference step;
    compile compiles the loss function as well."""
    import re
    from torch.profiler import ProfilerActivity, profile
    if not torch.cuda.is_available():
        raise SystemExit("bench profile: needs a CUDA GPU")
    dev = torch.device("cuda")
    model, _, step = gmp_step(model_path, dev, batch=batch, masked=True, fast=fast, graphs=False)
    micro, update = step.micro, step.update
    b = prune.to_device(random_batch(torch.Generator().manual_seed(0), model.config.vocab_size, batch, length, 0), dev)
    for _ in range(3):
        micro(b)
        update()
    sync(dev)
    n = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            micro(b)
            update()
        sync(dev)
    kernels = []
    for e in prof.key_averages():
        ms = (getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)) / n / 1000
        if ms > 0:
            kernels.append((ms, e.count // n, e.key))
    kernels.sort(reverse=True)
    kinds = {}
    for ms, _, name in kernels:
        kind = next((k for k, rx in KERNEL_KINDS if re.search(rx, name)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + ms
    total = sum(ms for ms, _, _ in kernels)
    return {"fast": fast, "kernel_ms_per_step": total, "matmul_share": kinds.get("matmul", 0.0) / total,
            "ms_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"ms": round(ms, 4), "per_step": c, "kernel": name[:240]} for ms, c, name in kernels[:25]]}


def bench_adam(model_path: str, *, fast: str, steps: int, sparsity: float = 0.9,
               device: str = "cuda" if torch.cuda.is_available() else "cpu") -> dict:
    """ms per AdamW step over the model's parameters (as --fast on / off builds it), gradients fixed: 'dense'
    (no zeros) or 'pruned' (the encoder masked at sparsity by prune.prune: gradients, pruned weights and their
    first moment zero, second moment kept). Is AdamW slower on zeros?"""
    dev = torch.device(device)
    out = {}
    for variant in ("dense", "pruned"):
        torch.manual_seed(0)
        model, masks, step = gmp_step(model_path, dev, batch=1, masked=variant == "pruned", fast=fast, graphs=False)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3   # the gradients each timed step reads
        with torch.no_grad():
            for n, m in masks.items():
                step.weights[n].grad.mul_(m)
        for _ in range(3):
            step.optimizer.step()
        sync(dev)
        t0 = time.time()
        for _ in range(steps):
            step.optimizer.step()
        sync(dev)
        out[variant] = {"step_ms": 1000 * (time.time() - t0) / steps, "pruned_nonzero": prune.pruned_nonzero(model, masks)}
    out["pruned_speed_vs_dense"] = out["dense"]["step_ms"] / out["pruned"]["step_ms"]
    return out


def bench_pruning(device: str = "cuda" if torch.cuda.is_available() else "cpu", repeats: int = 10) -> dict:
    """Global magnitude masks over a BERT-base-shaped encoder (85M weights), exact; kthvalue for contrast."""
    from transformers import BertConfig, BertModel
    dev = torch.device(device)
    weights = prune.prunable(BertModel(BertConfig()).to(dev), "encoder")
    n = sum(w.numel() for w in weights.values())

    def timed(fn):
        times = []
        for _ in range(repeats):
            sync(dev)
            t0 = time.time()
            out = fn()
            sync(dev)
            times.append(time.time() - t0)
        return 1000 * sorted(times)[len(times) // 2], out

    ms, masks = timed(lambda: prune.magnitude_masks(weights, 0.9, criterion="global"))
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    kth_ms, _ = timed(lambda: torch.kthvalue(flat, round(0.9 * n)))
    return {"weights": n, "masks_ms": ms, "exact": zeros == round(0.9 * n), "kthvalue_ms": kth_ms}


def bench_trainer(model_path: str, data_dir: str, *, steps: int, batch: int, out: str) -> dict:
    """What users run today: Hugging Face Trainer, dense fine-tuning, bf16, dynamic padding (the same
    tokenization as prune.py). Needs accelerate, which prune.py does not."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise SystemExit("bench trainer: the Trainer baseline needs accelerate (pip install accelerate)")
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
    path = prune.resolve_model_path(model_path)
    tok = AutoTokenizer.from_pretrained(path)
    ds = prune.load_splits("sst2", data_dir)["train"]
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True,
                remove_columns=["sentence", "idx"])
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, bf16=True, max_steps=steps,
                             learning_rate=5e-5, report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True)
    clock = steady_clock(warm=max(1, min(20, steps // 5)))
    trainer = Trainer(model=prune.load_model(path, "sst2"), args=args, train_dataset=ds,
                      data_collator=DataCollatorWithPadding(tok), callbacks=[clock])
    metrics = trainer.train().metrics
    return {"samples_per_s": steps * batch / metrics["train_runtime"], "train_runtime_s": metrics["train_runtime"],
            "steady_samples_per_s": (steps - clock.warm) * batch / (clock.end - clock.start),
            "steady_steps": steps - clock.warm}


def steady_clock(warm: int):
    """A Trainer callback timing the steps after the first `warm` (start-up, cuBLAS and allocator warm-up), the
    GPU synchronised at both marks: Trainer's steady rate, as prune.py's loop reports its own."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.warm, self.start, self.end = warm, None, None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (self.warm, state.max_steps):
                sync(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
                if state.global_step == self.warm:
                    self.start = time.time()
                else:
                    self.end = time.time()
    return Clock()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["pruning", "step", "profile", "adam", "trainer", "sparse", "save-random"])
    p.add_argument("--model", default="minilm", help="path, hub id, minilm, or config:bert-base (random weights)")
    p.add_argument("--data_dir", default="", help="trainer: SST-2 as train.jsonl[.gz] and validation.jsonl")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="step: measure each variant this many times, in "
                   "alternating order, and report the medians")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--tokenizer", default="minilm", help="save-random: the tokenizer to save with the model")
    p.add_argument("--only", default="", help="step: a comma list of variants (eager_dense, eager_gmp, on_dense, on_gmp, "
                                              "compile_dense, compile_gmp, on_dense_no_kd)")
    p.add_argument("--fast", default="on", choices=FAST_MODES, help="profile, adam: as --fast on / off builds the step (profile: or with torch.compile)")
    args = p.parse_args(argv)
    prune.quiet_libraries()
    env = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    if args.what == "pruning":
        res = bench_pruning()
    elif args.what == "trainer":
        res = bench_trainer(args.model, args.data_dir, steps=args.steps, batch=args.batch_size, out=args.out)
    elif args.what == "sparse":
        res = bench_sparse(args.model)
    elif args.what == "save-random":
        res = save_random(args.model, args.out, args.tokenizer)
    elif args.what == "adam":
        res = bench_adam(args.model, fast=args.fast, steps=args.steps)
    elif args.what == "profile":
        res = bench_profile(args.model, batch=args.batch_size, length=args.length, fast=args.fast)
    else:
        res = bench_variants(args)
    print(json.dumps({"bench": args.what, "model": args.model, "batch_size": args.batch_size, "length": args.length,
                      **env, **res}))
    return 0


STEP_VARIANTS = {  # dense = the same step (KD from cached logits included) without masks
    "eager_dense": dict(masked=False, fast="off"), "eager_gmp": dict(masked=True, fast="off"),
    "on_dense": dict(masked=False, fast="on"), "on_gmp": dict(masked=True, fast="on"),
    "compile_dense": dict(masked=False, fast="compile"), "compile_gmp": dict(masked=True, fast="compile"),
    "on_dense_no_kd": dict(masked=False, fast="on", teacher=False)}


def bench_variants(args) -> dict:
    """bench step: each chosen variant measured --repeats times, in alternating order (forward, then backward)
    so that drift of clocks or neighbours does not favour one side; each variant reports its median repeat, each
    mode its mask overhead (GMP* / dense samples/s of the medians) and the overhead of every repeat."""
    chosen = [(n, kw) for n, kw in STEP_VARIANTS.items() if (kw["fast"] == "off" or torch.cuda.is_available())
              and (not args.only or n in args.only.split(","))]
    runs = {n: [] for n, _ in chosen}
    for r in range(args.repeats):
        for name, kw in chosen if r % 2 == 0 else chosen[::-1]:
            runs[name].append(bench_step(args.model, batch=args.batch_size, length=args.length, steps=args.steps,
                                         **kw))
            print(json.dumps({name: runs[name][-1]}), file=sys.stderr, flush=True)
    res = {n: sorted(v, key=lambda x: x["samples_per_s"])[(len(v) - 1) // 2] for n, v in runs.items()}
    for mode in ("eager", "on", "compile"):
        gmp, dense = runs.get(f"{mode}_gmp"), runs.get(f"{mode}_dense")
        if gmp and dense:
            res[f"{mode}_mask_overhead"] = res[f"{mode}_gmp"]["samples_per_s"] / res[f"{mode}_dense"]["samples_per_s"]
            res[f"{mode}_mask_overhead_each"] = [g["samples_per_s"] / d["samples_per_s"] for g, d in zip(gmp, dense)]
    return res


def _forward_ms(model: nn.Module, batch: int, length: int, repeats: int) -> tuple:
    ids = torch.randint(min(1000, model.config.vocab_size // 2), model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            runs.append(time.perf_counter() - t0)
    return 1000 * sorted(runs)[repeats // 2], logits


def bench_sparse(model_path: str, sparsities=(0.8, 0.9, 0.97)) -> dict:
    """CPU inference (fp32, this machine's threads): forward latency at batch 1 x 128 tokens and throughput at
    32 x 128, dense vs tools/infer.py's sparsify (each layer CSR where measured faster), on masks from global magnitude
    pruning of the encoder; the largest logit difference; file sizes dense fp32 / fp16 and compressed."""
    out = {"threads": torch.get_num_threads()}
    for s in sparsities:
        model = classifier(model_path).eval()
        weights = prune.prunable(model, "encoder")
        masks = {n: torch.ones_like(w) for n, w in weights.items()}
        prune.prune(weights, masks, s, "global")
        row = {}
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            row["dense_fp32_MB"] = (Path(tmp) / "model.safetensors").stat().st_size / 1e6
            model.half().save_pretrained(tmp)
            row["dense_fp16_MB"] = (Path(tmp) / "model.safetensors").stat().st_size / 1e6
            model.float()
            prune.save_compressed(model, masks, Path(tmp) / "c.safetensors")
            row["compressed_fp32_MB"] = (Path(tmp) / "c.safetensors").stat().st_size / 1e6
            prune.save_compressed(model, masks, Path(tmp) / "c16.safetensors", dtype=torch.float16)
            row["compressed_fp16_MB"] = (Path(tmp) / "c16.safetensors").stat().st_size / 1e6
        for name, (batch, repeats) in {"latency_1x128": (1, 15), "throughput_32x128": (32, 3)}.items():
            dense_ms, dense_logits = _forward_ms(model, batch, 128, repeats)
            sparse_model = classifier(model_path).eval()
            sparse_model.load_state_dict(model.state_dict())
            counts = infer.sparsify(sparse_model, tokens=batch * 128)
            sparse_ms, sparse_logits = _forward_ms(sparse_model, batch, 128, repeats)
            row[name] = {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, **counts,
                         "max_logit_diff": float((dense_logits - sparse_logits).abs().max())}
        out[f"s{s}"] = row
        print(json.dumps({s: row}), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
