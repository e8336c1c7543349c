# session 17, call 1: the zero_pruned change (058823b, v left alone) on the H200: GPU tests, AdamW alone, mask overhead, CUDA fault matrix (on)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm
git log --oneline -1 > $OUT/progress.txt 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv >> $OUT/progress.txt 2>&1
timeout 110 python3 -m pytest -v -p no:cacheprovider test_prune.py -k "fused_weight_grads or graphed or fast_path or stay_bit or zero_pruned" > $OUT/pytest_fast.log 2>&1
echo "pytest_fast rc $? at $SECONDS" >> $OUT/progress.txt
j() { timeout 70 python3 tools/bench.py "$@" 2>>$OUT/bench.err | sed "s/^/{\"call\": \"$*\", \"r\": /; s/\$/}/" >> $OUT/bench.jsonl; }
j adam --model $M --length 32
j adam --model config:bert-base --length 128
for rep in 1 2 3; do
  j step --model $M --length 32 --steps 300 --only on_dense,on_gmp
done
for rep in 1 2; do
  j step --model config:bert-base --length 128 --steps 150 --only on_dense,on_gmp
done
echo "benches done at $SECONDS" >> $OUT/progress.txt
timeout $((585 - SECONDS)) python3 -m pytest -v -p no:cacheprovider --durations=5 test_prune.py -k "on_cuda_a_run_killed and not off" > $OUT/pytest_faults.log 2>&1
echo "faults rc $? at $SECONDS" >> $OUT/progress.txt
