"""SQuAD v1.1's official dev set split by article, for a pipeline check on real text where no SQuAD train
set is at hand: python tools/squad_split.py DEV.jsonl[.gz] OUT [--validation_articles 10].

The dev set's 48 articles, in file order: all but the last N become OUT/train.jsonl, the last N
OUT/validation.jsonl, each row as it is (the hub's columns). No article is in both, so no question's context
is seen in training. A model trained on 38 articles is not comparable with the paper's (87,599 training
questions); this checks windows, offsets and post-processing on real text.
"""
import argparse
import gzip
import json
import sys
from pathlib import Path


def split_by_article(rows: list, validation_articles: int) -> tuple:
    """(train, validation): the rows of the first articles and of the last validation_articles, by title."""
    titles = list(dict.fromkeys(r["title"] for r in rows))
    if not 0 < validation_articles < len(titles):
        raise ValueError(f"{len(titles)} articles cannot give {validation_articles} to validation and the rest to train")
    held = set(titles[-validation_articles:])
    return [r for r in rows if r["title"] not in held], [r for r in rows if r["title"] in held]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/squad_split.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dev", help="SQuAD v1.1 dev set as JSON Lines in the hub's columns (.jsonl or .jsonl.gz)")
    p.add_argument("out", help="the folder to write train.jsonl and validation.jsonl into (must not hold them)")
    p.add_argument("--validation_articles", type=int, default=10, help="articles held out for validation")
    args = p.parse_args(argv)
    with (gzip.open if args.dev.endswith(".gz") else open)(args.dev, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = Path(args.out)
    if (out / "train.jsonl").exists() or (out / "validation.jsonl").exists():
        print(f"squad_split.py: error: {out} already holds a split", file=sys.stderr)
        return 2
    try:
        train, validation = split_by_article(rows, args.validation_articles)
    except (KeyError, ValueError) as e:
        print(f"squad_split.py: error: {args.dev}: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("validation", validation)):
        tmp = out / f"{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        tmp.rename(out / f"{name}.jsonl")
    print(json.dumps({"train_questions": len(train), "validation_questions": len(validation),
                      "train_articles": len({r["title"] for r in train}),
                      "validation_articles": len({r["title"] for r in validation})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
