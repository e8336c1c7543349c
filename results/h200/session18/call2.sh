# session 18, call 2: GPU tests with checkpoints written behind training (fault matrix on CUDA graphs, snapshot test),
# then where the BERT-base-shape run's time goes, background writes vs waiting for each write (--sync)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
git log --oneline -1 > $OUT/progress.txt 2>&1; git status --short >> $OUT/progress.txt
timeout 120 python3 -m pytest -v -p no:cacheprovider test_prune.py -k "fused_weight_grads or graphed or fast_path or stay_bit or zero_pruned or behind_training or non_finite_loss_on_the_real_cli" > $OUT/pytest_fast.log 2>&1
echo "pytest_fast rc $? at $SECONDS" >> $OUT/progress.txt
timeout 260 python3 -m pytest -v -p no:cacheprovider --durations=3 test_prune.py -k "on_cuda_a_run_killed and not off" > $OUT/pytest_faults.log 2>&1
echo "faults rc $? at $SECONDS" >> $OUT/progress.txt
python3 tools/bench.py save-random --model config:bert-base --tokenizer $M --out /tmp/bertbase >> $OUT/progress.txt 2>&1
for mode in "" --sync; do
  timeout $((570 - SECONDS)) python3 results/h200/session18/run_timing.py $mode --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples 10000 --sparsity 0.9 --out $R/bert10k$mode 2>$OUT/timing$mode.err | tail -1 >> $OUT/timing.jsonl
  echo "timing $mode at $SECONDS" >> $OUT/progress.txt
done
