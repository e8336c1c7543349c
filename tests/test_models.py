"""Your model: every encoder-only family of transformers, tiny, through the loader, data and first batch."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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


def test_a_head_of_another_label_count_missing_encoder_weights_and_grouped_layers_are_refused_in_one_line(
        tmp_path, sst2_dir):
    """Three checkpoints that would train silently wrong, or end in a traceback, each refused in one line before
    anything is written: a fine-tuned 2-label head on 3-label data (run_glue would need --ignore_mismatched_sizes),
    a tied MLM checkpoint saved with its shared matrix under the output name only (its word embeddings would start
    random), and ConvBERT with grouped feed-forward layers (no mask reaches them: the stack would miss the target)."""
    import safetensors.torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, RobertaForMaskedLM
    tiny = make_family_model(tmp_path / "bert", "bert")
    two = tmp_path / "two-labels"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=2).save_pretrained(two)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, two / f.name)
    rows = sentiment_rows(48, 3)
    for split, part in (("train", rows), ("validation", rows[:16])):
        write_jsonl(tmp_path / "three" / f"{split}.jsonl", [dict(sentence=r["sentence"], label=r["idx"] % 3)
                                                            for r in part])
    with pytest.raises(prune.UsageError, match=r"has a classification head of 2 labels and task files has 3"):
        prune.run(prune.resolve_config(dict(model=str(two), train_file=str(tmp_path / "three" / "train.jsonl"),
                                            validation_file=str(tmp_path / "three" / "validation.jsonl"),
                                            recipe="dense", out=str(tmp_path / "a"), device="cpu", batch_size=16,
                                            max_length=32)), log=quiet)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())

    roberta = make_family_model(tmp_path / "roberta", "roberta")
    tied = tmp_path / "tied"
    shutil.copytree(roberta, tied)
    (tied / "model.safetensors").unlink()
    safetensors.torch.save_model(RobertaForMaskedLM(AutoConfig.from_pretrained(roberta)), str(tied / "model.safetensors"))
    _fails_before_training(tmp_path, r"lacks 1 encoder weight \(first: roberta\.embeddings\.word_embeddings\.weight\)",
                           name="b", data_dir=sst2_dir, model=str(tied), recipe="dense")

    convbert = make_family_model(tmp_path / "convbert", "convbert")
    config = AutoConfig.from_pretrained(convbert)
    config.num_groups = 2
    AutoModel.from_config(config).save_pretrained(convbert)
    _fails_before_training(tmp_path, r"has grouped linear layers .* that no mask reaches", name="c", data_dir=sst2_dir,
                           model=str(convbert), sparsity=0.9, hardness=0.0)
