"""Where does MiniLM's GMP*-vs-dense gap come from? Graphed steps, variants of the fused backward's mask."""
import json, sys, time, torch
sys.path.insert(0, "."); sys.path.insert(0, "tools")
import prune, bench
from torch.profiler import ProfilerActivity, profile
M, L, B = sys.argv[1], int(sys.argv[2]), 32
dev = torch.device("cuda")

def build(kind):
    model, masks, step = bench.gmp_step(M, dev, batch=B, masked=kind not in ("dense", "dense_zeros"), fast="on", graphs=True)
    if kind == "dense_zeros":   # no masks, but the weights 90% zero
        w = prune.prunable(model)
        prune.zero_pruned(w, prune.magnitude_masks(w, 0.9))
    fm = {"gmp_nomask": {}, "gmp_bf16": {n: m.bfloat16() for n, m in masks.items()}}.get(kind, step.step.masks)
    def micro_eager(b):
        with prune.fused_weight_grads(step.fused, fm):
            return step.step.micro(b)
    step.micro_eager = micro_eager
    return model, step

def timed(kind, steps=300, prof=False):
    model, step = build(kind)
    gen = torch.Generator().manual_seed(0)
    bs = [prune.to_device(bench.random_batch(gen, model.config.vocab_size, B, L, i), dev) for i in range(8)]
    for i in range(5): step.micro(bs[i % 8]); step.update()
    torch.cuda.synchronize()
    t0 = time.time()
    for i in range(steps): step.micro(bs[i % 8]); step.update()
    torch.cuda.synchronize()
    ms = 1000 * (time.time() - t0) / steps
    out = {"kind": kind, "step_ms": ms, "samples_per_s": B / ms * 1000}
    if prof:
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            for i in range(20): step.micro(bs[i % 8]); step.update()
            torch.cuda.synchronize()
        ks = sorted(((e.self_device_time_total / 20 / 1000, e.count // 20, e.key[:90]) for e in p.key_averages()
                     if e.self_device_time_total > 0), reverse=True)
        out["kernel_ms"] = sum(k[0] for k in ks)
        out["top"] = [[round(a, 4), c, n] for a, c, n in ks[:25]]
    print(json.dumps(out), flush=True)

for kind in ["dense", "gmp", "gmp_nomask", "gmp_bf16", "dense_zeros", "gmp", "dense"]:
    timed(kind)
timed("dense", prof=True)
timed("gmp", prof=True)
