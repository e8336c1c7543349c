# session 16, call 2: GPU tests, MiniLM mask-gap diagnosis, old vs new step benchmarks (same call)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm
timeout 100 python3 .carry/prof.py $M 32 > $OUT/prof_minilm.jsonl 2>$OUT/prof.err
for v in new old; do
  bp=tools/bench.py; [ $v = old ] && bp=.carry/old/tools/bench.py
  timeout 60 python3 $bp step --model $M --length 32 --steps 300 --only on_gmp,on_dense | sed "s/^/{\"code\": \"$v\", \"r\": /; s/\$/}/" >> $OUT/bench.jsonl 2>>$OUT/bench.err
  timeout 60 python3 $bp step --model config:bert-base --length 128 --steps 150 --only on_gmp,on_dense | sed "s/^/{\"code\": \"$v\", \"r\": /; s/\$/}/" >> $OUT/bench.jsonl 2>>$OUT/bench.err
done
timeout 60 python3 tools/bench.py profile --model config:bert-base --length 128 > $OUT/profile_bert128_on.json 2>>$OUT/bench.err
echo "benches done $SECONDS" >> $OUT/bench.err
timeout 250 python3 -m pytest -q -p no:cacheprovider --durations=8 test_prune.py -k "cuda or graphed or fast_path or non_finite or fused_weight_grads or stay_bit" > $OUT/pytest_gpu.log 2>&1
echo "pytest rc $? at $SECONDS" >> $OUT/pytest_gpu.log
