"""One writer per run folder (the lock), the scheduler's signals, the suite as a job list, and tools/slurm.sbatch run
as SLURM would run it."""
from tests.helpers import *  # noqa: F401,F403 (imports, fixtures and helpers)


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
