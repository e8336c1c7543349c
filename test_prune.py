"""The algorithm of the GMP* reference, test by test: the schedules' check values (SPEC 2), the KD loss, the masks,
the masked update, the copy units, the loop end to end, resume after a kill, and the paper's defaults. Each test names
the property it protects. The rest of the suite (tasks and data, models, the run folder's lock and the cluster, the
fast path, the claims report, the README) is in tests/, one file per subject."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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


def test_deterministic_modes_set_torchs_flags_and_refuse_other_values(monkeypatch, tmp_path):
    """strict (the default): no warn-only, so attention takes its deterministic backward and any other such op
    raises; on: deterministic kernels, warnings where torch has none (cuDNN attention's backward); a fixed cuBLAS
    workspace either way."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False: calls.append((mode, warn_only)))
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset at the end")   # restored to what it was before the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    prune.deterministic_cuda()
    prune.deterministic_cuda(strict=True)
    assert calls == [(True, True), (True, False)] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    base = dict(task="sst2", sparsity=0.9, teacher="t", out=str(tmp_path / "x"))
    assert prune.resolve_config(base)["deterministic"] == "strict"
    assert prune.resolve_config(dict(base, deterministic="on"))["deterministic"] == "on"
    with pytest.raises(prune.UsageError, match="deterministic must be 'on', 'off' or 'strict', got 'yes'"):
        prune.resolve_config(dict(base, deterministic="yes"))


def test_the_paper_recipe_is_the_default(tmp_path):
    assert RECIPE["scope"] == "encoder" and RECIPE["criterion"] == "global"
    assert RECIPE["initial_sparsity"] == 0.7 and RECIPE["prune_per_epoch"] == 10 and RECIPE["base_epochs"] == 2
    assert RECIPE["lr"] == 1e-4 and RECIPE["lr_min"] == 1e-6 and RECIPE["warmup"] == 0.0   # no warmup at all
    assert RECIPE["lr_schedule"] == "cycles" and prune.RUN_DEFAULTS["deterministic"] == "strict"
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
    """results.json records what a run computed on (the stack's versions, the device, deterministic mode, the
    attention kernel: SDPA for BERT) and the teacher by the sha256 of its weights, beside its mean top probability at T 1, 2, 5.5 and 8.5 (SPEC 1)."""
    import hashlib
    cfg = run_cfg(tmp_path, data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.5, epochs=6,
                  max_train_samples=64)
    results = prune.run(cfg, log=quiet)
    assert set(results["versions"]) == {"torch", "transformers", "datasets", "numpy", "tokenizers", "safetensors"}
    assert results["versions"]["transformers"] == transformers.__version__ and results["deterministic"] is True
    assert results["attention"] == "sdpa"
    assert results["teacher_sha256"] == hashlib.sha256((tiny_teacher / "model.safetensors").read_bytes()).hexdigest()
    peak = results["teacher_top_probability"]
    assert list(peak) == ["1", "2", "5.5", "8.5"] and 1 >= peak["1"] > peak["2"] > peak["5.5"] > peak["8.5"] >= 0.5
    logits = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)["logits"]
    assert peak["5.5"] == pytest.approx(float(F.softmax(logits / 5.5, -1).max(-1).values.mean()))


def test_kd_defaults_are_the_papers():
    """h = 1.0 and T = 5.5 live in RECIPES alone: kd.py's functions take them as arguments (a copied loss carries
    no default from elsewhere)."""
    assert (RECIPE["hardness"], RECIPE["temperature"]) == (1.0, 5.5)
    import inspect
    assert inspect.signature(kd.kd_loss).parameters["temperature"].default is inspect.Parameter.empty
    sig = inspect.signature(kd.distillation_loss).parameters
    assert sig["hardness"].default is sig["temperature"].default is inspect.Parameter.empty


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


def test_a_runs_loop_is_train_with_its_log_lines(tmp_path, tiny, tiny_teacher, sst2_dir, monkeypatch):
    """run_loop (section 7) computes what the copy unit train (section 6) computes: the same run, its loop swapped
    for train, ends at the same weights and masks bit for bit, with evaluations and checkpoints at every cycle."""
    kw = dict(data_dir=sst2_dir, model=str(tiny), teacher=str(tiny_teacher), sparsity=0.8, epochs=4, base_epochs=1,
              lr=1e-3, log_every=3)
    prune.run(run_cfg(tmp_path, name="loop", **kw), log=quiet)

    def train_only(cfg, step, plan, batches, evals, device, meter, first_step, log):
        prune.train(step, plan, batches, criterion=cfg["criterion"], first_step=first_step)
    monkeypatch.setattr(prune, "run_loop", train_only)
    prune.run(run_cfg(tmp_path, name="train", **kw), log=quiet)
    (_, w_a, m_a), (_, w_b, m_b) = _final_state(tmp_path / "loop"), _final_state(tmp_path / "train")
    assert all(torch.equal(m_a[n], m_b[n]) for n in m_a) and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert len([e for e in _log(tmp_path / "loop") if "eval" in e]) == 4 and not _log(tmp_path / "train")


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
