# session 18, call 4: the spread of the full-run ratios: our runs once more and each Trainer twice, one call
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs4
echo start > $OUT/progress.txt
j() { echo "{\"call\": \"tools/bench.py $*\"}" >> $OUT/bench.jsonl; timeout 90 python3 tools/bench.py "$@" >> $OUT/bench.jsonl 2>>$OUT/bench.err; }
res() { echo "{\"call\": \"$1\"}" >> $OUT/bench.jsonl; python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ('task','model','sparsity_target','metrics','steps','train_samples_per_s','run_samples_per_s','train_time_s','teacher_time_s','eval_time_s','wall_time_s') if k in r}))" $2 >> $OUT/bench.jsonl; }
[ -f /tmp/bertbase/config.json ] || python3 tools/bench.py save-random --model config:bert-base --tokenizer $M --out /tmp/bertbase > /dev/null 2>>$OUT/progress.txt
timeout 100 python3 prune.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples 10000 --sparsity 0.9 --out $R/bert > /dev/null 2>$OUT/bert.log
res "prune.py --task sst2 --model bert-base-random --max_train_samples 10000 --sparsity 0.9" $R/bert/results.json
for i in 1 2; do j trainer --model /tmp/bertbase --data_dir $D --steps 600 --out /tmp/t4b$i; done
echo "bert-base done at $SECONDS" >> $OUT/progress.txt
T=/tmp/runs/teacher/model; [ -f $T/config.json ] || { T=$R/teacher/model; timeout 80 python3 prune.py --task sst2 --recipe dense --model $M --data_dir $D --lr 5e-5 --out $R/teacher > /dev/null 2>$OUT/teacher.log; }
timeout 110 python3 prune.py --task sst2 --model $M --teacher $T --data_dir $D --sparsity 0.9 --out $R/minilm > /dev/null 2>$OUT/minilm.log
res "prune.py --task sst2 --model minilm --sparsity 0.9" $R/minilm/results.json
for i in 1 2; do [ $SECONDS -lt 440 ] && j trainer --model $M --data_dir $D --steps 1000 --out /tmp/t4m$i; done
echo "all done at $SECONDS" >> $OUT/progress.txt
