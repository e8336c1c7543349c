"""The README's cluster flow on a real single-node SLURM (tools/local_slurm.sh: Debian's packages, as root)."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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
        _wait_while_progressing(teacher.exists, lambda: [teacher.parent.with_suffix(".log"), teacher.parent / "log.jsonl",
                                                         *submit.glob("slurm-*.out")], 600, "the teacher")
        # index 2 is 80%, index 3 is 90%: requeue one mid-training, signal the other as at its time limit
        for i, stop in ((2, ["scontrol", "requeue", f"{s}_2"]), (3, ["scancel", "--signal=USR1", "--batch", f"{s}_3"])):
            log = Path(names[i - 2]) / "log.jsonl"
            _wait_while_progressing(lambda: log.exists() and log.read_text().strip(),
                                    lambda: [Path(names[i - 2] + ".log"), *submit.glob("slurm-*.out")], 600,
                                    f"training of {i}")
            _slurm(env, *stop)
            _wait_for(lambda: (_job_field(env, f"{s}_{i}", "Restarts"), _job_field(env, f"{s}_{i}", "Reason")) ==
                      ("1", "BeginTime"), 120, f"the requeue of {i}")       # requeued and its last start ended
            _slurm(env, "scontrol", "update", f"jobid={s}_{i}", "StartTime=now")   # not in 120 s: now
        finished = [Path(n) / "results.json" for n in names]
        logs = lambda: [Path(n + ".log") for n in names] + [Path(n) / "log.jsonl" for n in names] + list(  # noqa: E731
            submit.glob("slurm-*.out"))
        _wait_while_progressing(lambda: all(f.exists() for f in finished), logs, 600, "the students")
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
        shutil.rmtree(slurm_dir, ignore_errors=True)                   # nothing left in /tmp
