# session 16, call 1: step benchmarks old vs new (same call), profile, compile check, GPU tests
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv > $OUT/gpu.txt 2>&1
b() { timeout 90 python3 "$@"; }
for rep in 1 2; do
  b tools/bench.py step --model $M --length 32 --steps 300 --only on_dense,on_gmp > $OUT/new_minilm32_$rep.json 2>>$OUT/bench.err
  b .carry/old/tools/bench.py step --model $M --length 32 --steps 300 --only on_dense,on_gmp > $OUT/old_minilm32_$rep.json 2>>$OUT/bench.err
  b tools/bench.py step --model config:bert-base --length 128 --steps 150 --only on_dense,on_gmp > $OUT/new_bert128_$rep.json 2>>$OUT/bench.err
  b .carry/old/tools/bench.py step --model config:bert-base --length 128 --steps 150 --only on_dense,on_gmp > $OUT/old_bert128_$rep.json 2>>$OUT/bench.err
done
b tools/bench.py step --model $M --length 32 --steps 100 --only eager_dense,eager_gmp > $OUT/new_minilm32_eager.json 2>>$OUT/bench.err
b tools/bench.py step --model config:bert-base --length 128 --steps 60 --only eager_dense,eager_gmp > $OUT/new_bert128_eager.json 2>>$OUT/bench.err
b tools/bench.py step --model config:bert-base --batch_size 16 --length 384 --steps 80 --only on_dense,on_gmp > $OUT/new_bert384.json 2>>$OUT/bench.err
b tools/bench.py step --model config:roberta-large --batch_size 80 --length 80 --steps 40 --only on_dense,on_gmp > $OUT/new_roberta_mc.json 2>>$OUT/bench.err
b tools/bench.py profile --model config:bert-base --length 128 > $OUT/profile_bert128_on.json 2>>$OUT/bench.err
b tools/bench.py profile --model config:bert-base --length 128 --fast off > $OUT/profile_bert128_off.json 2>>$OUT/bench.err
timeout 100 python3 tools/bench.py step --model $M --length 32 --steps 100 --only compile_gmp > $OUT/new_minilm32_compile.json 2>>$OUT/bench.err
echo benches done $SECONDS > $OUT/progress.txt
timeout 240 python3 -m pytest -q -p no:cacheprovider test_prune.py -k "cuda or graphed or fast_path or non_finite or fused_weight_grads or stay_bit" > $OUT/pytest_gpu.log 2>&1
echo pytest done $SECONDS rc $? >> $OUT/progress.txt
