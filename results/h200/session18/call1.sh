# next session, call 1: GPU checks of 4539387 (bool checkpoint masks) and checkpoint timing; bench save-random path
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
git log --oneline -1 > $OUT/progress.txt 2>&1
timeout 240 python3 -m pytest -v -p no:cacheprovider --durations=3 test_prune.py -k "on_cuda_a_run_killed and not off" > $OUT/pytest_faults.log 2>&1
echo "faults rc $? at $SECONDS" >> $OUT/progress.txt
python3 tools/bench.py save-random --model config:bert-base --out /tmp/bertbase >/dev/null 2>>$OUT/progress.txt
for n in 10000 20000; do
  timeout $((560 - SECONDS)) python3 results/h200/session17/run_timing.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples $n --sparsity 0.9 --out $R/bert$n 2>/dev/null | tail -1 >> $OUT/timing.jsonl
done
echo "done at $SECONDS" >> $OUT/progress.txt
