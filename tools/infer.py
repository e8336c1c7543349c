"""Inference with a saved model: python tools/infer.py --model RUN/model --task TASK [--compressed] [--sparse].

Scores a model folder that prune.py wrote (the stock weights, or compressed.safetensors with --compressed) on
the task's evaluation split (or, for a model trained on --train_file, on --validation_file), optionally with its pruned linears in CSR (--sparse, CPU), and prints its metrics
and speed as one JSON line; --predictions writes each example's prediction and score as a run does. Runs never
import this file; its functions can be copied alone:
load_compressed (the stock model back from compressed.safetensors, bit for bit) and sparsify (CSR linears
where they are faster).
"""
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prune  # noqa: E402


def unpack_mask(bits: torch.Tensor, shape: list) -> np.ndarray:
    """A bool mask of the given shape from its bit-packed bytes (np.packbits order)."""
    return np.unpackbits(bits.numpy())[:math.prod(shape)].reshape(shape).astype(bool)


def load_compressed(folder: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The stock AutoModelFor* model of a folder holding config.json and compressed.safetensors: each masked
    weight rebuilt as zeros with its kept values scattered back, so the weights equal the saved ones bit for bit."""
    from safetensors import safe_open
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(folder)
    with safe_open(str(Path(folder) / "compressed.safetensors"), framework="pt") as f:
        shapes = json.loads(f.metadata()["pruned_shapes"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    for name, shape in shapes.items():
        values = state.pop(f"{name}.values")
        keep = unpack_mask(state.pop(f"{name}.mask"), shape)
        weight = torch.zeros(shape, dtype=values.dtype)
        weight[torch.from_numpy(keep)] = values
        state[name] = weight
    kind = next((k for k, suffix in (("qa", "QuestionAnswering"), ("multiple_choice", "MultipleChoice"))
                 if any(a.endswith("For" + suffix) for a in config.architectures or [])), "classification")
    model = prune.auto_class(kind).from_config(config, dtype=dtype)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model.eval()


def load_masks(folder: str) -> dict:
    """{name: keep-mask (float)} of each masked weight, from a run's model/compressed.safetensors."""
    from safetensors import safe_open
    with safe_open(str(Path(folder) / "compressed.safetensors"), framework="pt") as f:
        shapes = json.loads(f.metadata()["pruned_shapes"])
        return {n: torch.from_numpy(unpack_mask(f.get_tensor(f"{n}.mask"), s).astype(np.float32))
                for n, s in shapes.items()}


class SparseLinear(nn.Module):
    """A pruned nn.Linear for CPU inference: the weight in CSR (only its non-zeros), y = x W^T + b."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).t()  # CSR @ dense: (W x^T)^T, the bias added in the same call
        y = torch.sparse.mm(self.weight, flat) if self.bias is None else torch.addmm(self.bias[:, None], self.weight, flat)
        return y.t().reshape(*x.shape[:-1], self.out_features)


def faster_sparse(linear: nn.Linear, sparse: SparseLinear, tokens: int, repeats: int = 5) -> bool:
    """Whether the CSR layer beats the dense one by 10% on `tokens` input rows (median wall time, this machine;
    its transposed output made contiguous, as the next layer may need, and a margin: a layer timed alone runs
    with warmer caches than inside the model)."""
    x = torch.randn(tokens, linear.in_features)
    times = {}
    for name, layer in (("dense", linear), ("sparse", sparse)):
        layer(x)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer(x).contiguous()
            runs.append(time.perf_counter() - t0)
        times[name] = sorted(runs)[repeats // 2]
    return times["sparse"] < 0.9 * times["dense"]


@torch.no_grad()
def sparsify(model: nn.Module, tokens: int) -> dict:
    """Swap each pruned encoder linear (at most half dense) for a SparseLinear where timing both on `tokens`
    input rows says it is faster (CPU inference, eval mode; CSR wins at 128 tokens below about 20% density and
    loses at thousands). Returns how many went each way."""
    encoder = set(prune.weight_groups(model)["encoder"])
    swapped, kept = 0, 0
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and f"{name}.weight" in encoder):
            continue
        sparse = SparseLinear(module) if float((module.weight != 0).float().mean()) <= 0.5 else None
        if sparse is not None and faster_sparse(module, sparse, tokens):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, sparse)
            swapped += 1
        else:
            kept += 1
    return {"sparse_linears": swapped, "dense_linears": kept}


def own_data(validation_file: str, config, model: str) -> dict:
    """The task of a model trained on one's own files (prune.py --train_file): the file's text columns by
    run_glue's rule, the labels in the order of the model's head."""
    spec = prune.files_task(validation_file, validation_file)
    if (spec["labels"] is None) != (config.num_labels == 1) or spec["labels"] and prune.generic_labels(config):
        raise prune.UsageError(f"model '{model}' has {config.num_labels} unnamed or mismatched labels for "
                               f"{validation_file}: give a model trained with prune.py --train_file on these labels")
    if spec["labels"] is not None:
        spec["labels"] = [config.id2label[i] for i in sorted(config.id2label)]
    return spec


def main(argv=None) -> int:
    p = prune.ArgumentParser(prog="tools/infer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a saved model folder (a run's model/)")
    p.add_argument("--task", default="", help=f"the task: {', '.join(prune.TASKS)}")
    p.add_argument("--validation_file", default="", help="instead of --task: your own data (CSV or JSON Lines), for "
                                                         "a model trained with prune.py --train_file")
    p.add_argument("--data_dir", default="", help="local JSON Lines in the hub's columns (default: the hub)")
    p.add_argument("--compressed", action="store_true", help="load compressed.safetensors instead of the dense file")
    p.add_argument("--sparse", action="store_true", help="CSR pruned linears where faster (sparsify); CPU only")
    p.add_argument("--max_eval_samples", type=int, default=0, help="score this many rows (0: all)")
    p.add_argument("--batch_size", type=int, default=prune.RUN_DEFAULTS["eval_batch_size"], help="rows per batch")
    p.add_argument("--max_length", type=int, default=0, help="tokens per row (default: the task's GMP* recipe)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--predictions", default="", help="also write each example's prediction and score here (JSON "
                                                     "Lines, as a run's predictions.jsonl.gz; gzip-compressed if the name ends in .gz)")
    prune.quiet_libraries()
    try:
        args = p.parse_args(argv)
        if bool(args.task) == bool(args.validation_file) or args.validation_file and args.data_dir:
            raise prune.UsageError("give --task (and --data_dir), or --validation_file alone")
        if args.task not in prune.TASKS and not args.validation_file:
            raise prune.UsageError(f"unknown task '{args.task}'; known: {', '.join(prune.TASKS)}")
        if args.sparse and args.device != "cpu":
            raise prune.UsageError("--sparse runs CSR kernels on the CPU: leave --device at cpu")
        path, config, tokenizer = prune.load_config_and_tokenizer(args.model)
        task = own_data(args.validation_file, config, args.model) if args.validation_file else prune.TASKS[args.task]
        prune.check_label_names(task, config, f"model '{args.model}'")
        if args.compressed and not (Path(path) / "compressed.safetensors").is_file():
            raise prune.UsageError(f"no compressed.safetensors in {args.model}")
        splits = prune.load_splits(task, args.data_dir, max_eval=args.max_eval_samples, evaluation_only=True)
        model = load_compressed(path) if args.compressed else prune.load_model(path, task, config)
    except prune.UsageError as e:
        print(f"infer.py: error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    model = model.to(device).eval()
    defaults = prune.recipe_defaults(task, "gmp_star")
    length = min(args.max_length or defaults["max_length"], prune.usable_positions(config))
    evals = {s: (prune.encode(task, ds, tokenizer, length,
                              defaults.get("doc_stride")), ds) for s, ds in splits.items()}
    enc = next(iter(evals.values()))[0]   # CSR where it is faster at this evaluation's tokens per batch
    tokens = int(args.batch_size * np.mean(enc["lengths"]) * (enc["lengths"].shape[1] if enc["lengths"].ndim > 1 else 1))
    swapped = {**prune.sparsity_report(model), **(sparsify(model, tokens=min(tokens, 8192)) if args.sparse else {})}
    t0 = time.time()
    metrics = prune.evaluate(model, task, evals, device, args.batch_size)
    seconds = time.time() - t0
    if args.predictions:   # scored again apart from the timing above: the rows cost SQuAD a second answer search
        prune.write_jsonl(Path(args.predictions), prune.evaluate(model, task, evals, device, args.batch_size,
                                                                 rows=True)[1])
    rows = sum(len(ds) for ds in splits.values())
    print(json.dumps({"model": args.model, "task": task["name"], "compressed": args.compressed, "sparse": args.sparse,
                      **swapped, "metrics": metrics, "rows": rows, "samples_per_s": rows / seconds,
                      "device": str(device), "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
