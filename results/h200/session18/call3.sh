# session 18, call 3: full runs against Trainer with checkpoints written behind training, one call:
# the BERT-base shape (random weights, MiniLM-L6's tokenizer) on 10,000 and 20,000 SST-2 rows, then MiniLM-L6 on all of SST-2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
git status --short > $OUT/progress.txt 2>&1
j() { echo "{\"call\": \"tools/bench.py $*\"}" >> $OUT/bench.jsonl; timeout 100 python3 tools/bench.py "$@" >> $OUT/bench.jsonl 2>>$OUT/bench.err; }
res() { echo "{\"call\": \"$1\"}" >> $OUT/bench.jsonl; python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ('task','model','sparsity_target','metrics','steps','train_samples_per_s','run_samples_per_s','train_time_s','teacher_time_s','eval_time_s','wall_time_s') if k in r}))" $2 >> $OUT/bench.jsonl; }
python3 tools/bench.py save-random --model config:bert-base --tokenizer $M --out /tmp/bertbase > /dev/null 2>>$OUT/progress.txt
for n in 10000 20000; do
  timeout 120 python3 prune.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples $n --sparsity 0.9 --out $R/bert$n > /dev/null 2>$OUT/bert$n.log
  res "prune.py --task sst2 --model bert-base-random --max_train_samples $n --sparsity 0.9" $R/bert$n/results.json
done
j trainer --model /tmp/bertbase --data_dir $D --steps 600 --out /tmp/tr2
echo "bert-base done at $SECONDS" >> $OUT/progress.txt
timeout 80 python3 prune.py --task sst2 --recipe dense --model $M --data_dir $D --lr 5e-5 --out $R/teacher > /dev/null 2>$OUT/teacher.log
timeout 130 python3 prune.py --task sst2 --model $M --teacher $R/teacher/model --data_dir $D --sparsity 0.9 --out $R/minilm > /dev/null 2>$OUT/minilm.log
res "prune.py --task sst2 --model minilm --sparsity 0.9" $R/minilm/results.json
j trainer --model $M --data_dir $D --steps 1000 --out /tmp/tr1
echo "all done at $SECONDS" >> $OUT/progress.txt
