"""bash run.sh mini and the claims report: the plan, the SQuAD split, the rule (margin, bootstrap, t, Holm, one
verdict), the refusals to pair, the table and its README headline, and the README's map of the code."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


@pytest.mark.slow
def test_mini_plans_teachers_the_grid_figure_1_and_ablations_on_the_tasks_with_data(tmp_path):
    data = _mini_data(tmp_path, ("sst2", "commonsense_qa"))
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "DATA": str(data)}
    r = subprocess.run(["bash", str(HERE / "run.sh"), "--dry-run", "mini"], capture_output=True, text=True, cwd=HERE,
                       env=env)
    assert r.returncode == 0, r.stderr
    runs = {re.search(r"--out \S+/mini/(\S+)", line)[1]: line for line in r.stdout.splitlines() if "prune.py" in line}
    assert all(f"--model minilm --data_dir {data}/" in line for line in runs.values())
    assert all(line.count("--deterministic on") == 1 for line in runs.values())   # the mode results/mini was made in
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
    assert all(("--deterministic" in line) != n.startswith(("squad", "teacher-squad")) for n, line in runs.items())
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


def _inconclusive_arms(root: Path, seeds=range(3)) -> None:
    """A teacher and two CSQA arms whose seeds disagree (+3, -3, +1 points): the Table 2 row is inconclusive."""
    rng = np.random.default_rng(0)
    _fake_run(root, "teacher-commonsense_qa", "commonsense_qa", 0.45, recipe="dense")
    base = (rng.random(1000) < 0.37).astype(int)
    for seed in seeds:
        _fake_run(root, f"commonsense_qa-s90-seed{seed}", "commonsense_qa", correct=base, sparsity=0.9)
        _fake_run(root, f"commonsense_qa-s90-init0.0-seed{seed}", "commonsense_qa", sparsity=0.9,
                  correct=_flip(base, (30, 30, 10)[seed], (0, 1, 0)[seed], rng))


def test_the_stopping_rule_asks_both_arms_of_an_inconclusive_row_for_their_next_seed(tmp_path):
    _inconclusive_arms(tmp_path)
    _fake_run(tmp_path, "commonsense_qa-s90-nokd-seed0", "commonsense_qa", correct=np.zeros(1000, int), sparsity=0.9)
    for seed in (1, 2):   # KD far ahead of labels only: holds, needs nothing
        _fake_run(tmp_path, f"commonsense_qa-s90-nokd-seed{seed}", "commonsense_qa", correct=np.zeros(1000, int),
                  sparsity=0.9)
    rows = {r["second"]: r for r in report.claim_rows(report.find_results(tmp_path))}
    assert rows["commonsense_qa-s90-init0.0"]["verdict"] == "inconclusive"
    assert rows["commonsense_qa-s90-nokd"]["verdict"] == "holds"
    assert report.more_seeds(report.find_results(tmp_path)) == ["commonsense_qa-s90-seed3",
                                                                "commonsense_qa-s90-init0.0-seed3"]
    _fake_run(tmp_path, "commonsense_qa-s90-seed3", "commonsense_qa", correct=np.ones(1000, int), sparsity=0.9)
    assert report.more_seeds(report.find_results(tmp_path)) == ["commonsense_qa-s90-init0.0-seed3"]   # one arm ran


@pytest.mark.slow
def test_run_sh_mini_more_runs_the_next_seed_until_the_row_is_decided_or_has_10(tmp_path):
    """run.sh's mini-more stage with a stand-in prune.py (each new seed copies seed 0 of its arm: +3 points): it runs
    only the inconclusive row's two arms, a seed at a time from 3, and stops once the row is decided or at 10 seeds."""
    mini = tmp_path / "runs" / "mini"
    _inconclusive_arms(mini)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 0\n")
    fake = bin_dir / "fakepython"
    fake.write_text(f"""#!/usr/bin/env bash
[ "$1" = -c ] && exit 0                      # the preflight: a GPU is there
[ "$1" = prune.py ] || exec {sys.executable} "$@"
out=${{@: -1}}; name=$(basename "$out"); echo "$name" >> {tmp_path}/ran
cp -r "$(dirname "$out")/${{name%-seed*}}-seed0" "$out" && sed -i 's/"seed": 0/"seed": '"${{name##*-seed}}"'/g' "$out/results.json"
""")
    for f in (bin_dir / "nvidia-smi", fake):
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(fake), "RUNS": str(tmp_path / "runs"),
           "DATA": str(_mini_data(tmp_path, ("commonsense_qa",))), "MINI_MODEL": str(tmp_path)}
    jobs = subprocess.run(["bash", str(HERE / "run.sh"), "--jobs", "mini-more"], capture_output=True, text=True,
                          cwd=HERE, env=env)   # as commands for a scheduler: the next round only
    assert jobs.returncode == 0, jobs.stderr
    assert [re.search(r"--out \S+/mini/(\S+) ", line)[1] for line in jobs.stdout.splitlines() if "prune.py" in line] == [
        "commonsense_qa-s90-seed3", "commonsense_qa-s90-init0.0-seed3"]
    r = subprocess.run(["bash", str(HERE / "run.sh"), "mini-more"], capture_output=True, text=True, cwd=HERE, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    ran = (tmp_path / "ran").read_text().split()
    last = len(ran) // 2 + 2
    assert ran == [f"commonsense_qa-{arm}-seed{s}" for s in range(3, last + 1) for arm in ("s90", "s90-init0.0")]
    row = {r["second"]: r for r in report.claim_rows(report.find_results(mini))}["commonsense_qa-s90-init0.0"]
    assert row["verdict"] != "inconclusive" or last == 9
    assert report.more_seeds(report.find_results(mini)) == []


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
    assert "asks next for 2 runs (" in md and "): commonsense_qa-s90-seed3, commonsense_qa-s90-init0.0-seed3." in md
    assert "| teacher-winogrande-lr1e-5-e4 | 1e-05 | 4 |" in md and "| 0.693 | 49.5 |" in md
    head = report.headline(md).splitlines()
    assert head[0] == "| claim | paper | CSQA | SQuAD split |" and len(head) == 2 + 5     # one line per claim
    assert "| Table 4: hardness 1.0 beats 0.6 | 86.7 vs 84.6 | +6.0 **holds** |  |" in head
    assert "| Table 5: temperature 5.5 beats 1 | 86.7 vs 84.7 | -6.0 **reversed** |  |" in head
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
    mini = HERE / "results" / "mini"   # a run's files stay in its folder: none stray to the top level
    assert sorted(p.name for p in mini.iterdir() if p.is_file()) == ["README.md", "claims.md", "figure1.png"]
    assert all((p / "results.json").is_file() for p in mini.iterdir() if p.is_dir())


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
    assert names[0] == "masked_update" and names[-1] == "main" and "run_loop" in names and "_run" in names
    assert [c.co_name for c in last_stack[:-1] if not mapped(c)] == []
    functions = {c for c in entered if not c.co_name.startswith("<")}          # comprehensions belong to their function
    assert sorted(f"{files[c.co_filename]}:{c.co_name}" for c in functions if not mapped(c) and not plumbing(c)) == []
    assert {"prune", "student_loss", "distillation_loss", "collate", "make_batches", "resolve_config", "finish"} <= {
        c.co_name for c in functions if mapped(c)}
    total = sum(b - a + 1 for rs in ranges.values() for a, b in rs)
    inside = sum(mapped(c) for c in functions)

    def length(code) -> int:                                    # the function's lines, signature to last line
        return max(line for _, _, line in code.co_lines() if line is not None) - code.co_firstlineno + 1
    read = sum(length(c) for c in functions)
    read_inside = sum(length(c) for c in functions if mapped(c))
    text = " ".join((HERE / "README.md").read_text().split()).lower()
    assert f"in {total} lines" in text
    stated = (f"a traced cpu run enters {len(functions)} functions, {read} lines: {inside} functions and "
              f"{read_inside} lines in this map")
    assert stated in text, stated
