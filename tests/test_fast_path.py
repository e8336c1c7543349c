"""The CUDA-graph fast path (tools/fast.py): parity with the reference Step, resume and signals on the GPU, and
deterministic GPU runs. Skipped where no GPU is (CI has none)."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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


@cuda
@pytest.mark.parametrize("task, mode", [("commonsense_qa", "default"), ("squad", "default"), ("commonsense_qa", "on")])
def test_on_cuda_a_teacher_trained_twice_has_one_sha256(tmp_path, task, mode):
    """With the default --deterministic (strict) one dense command run twice writes the same model.safetensors: CSQA
    (short choices) and the SQuAD split run.sh mini makes (384 tokens, where cuDNN attention's backward is not
    deterministic); and CSQA with on, the mode its claims runs used (torch only warns there). The real MiniLM-L6 or
    MINI_MODEL."""
    data, split = SHARED_DATA / task, "validation" if task == "squad" else "train"   # SQuAD: its dev set, split
    source = next((p for p in (data / f"{split}.jsonl.gz", data / f"{split}.jsonl") if p.exists()), None)
    if source is None:
        pytest.skip(f"the shared {task} files exist only in this workplace")
    if task == "squad":   # the mini stage's split of the dev set (no SQuAD train here)
        from tools import squad_split
        data = tmp_path / "split"
        assert squad_split.main([str(source), str(data)]) == 0
    digests, model = [], os.environ.get("MINI_MODEL") or _minilm_path()
    for name in ("a", "b"):
        out = tmp_path / name
        r = _cli(["--task", task, "--model", model, "--data_dir", str(data), "--recipe", "dense", "--lr",
                  "5e-5", "--epochs", "1", "--max_train_samples", "2000", "--device", "cuda", "--out", str(out)]
                 + (["--deterministic", mode] if mode != "default" else []), timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append(hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest())
        assert json.loads((out / "results.json").read_text())["deterministic"] == {"on": True, "default": "strict"}[mode]
    assert digests[0] == digests[1]
