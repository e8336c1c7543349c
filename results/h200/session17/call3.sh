# session 17, call 3: the step benchmarks with moments present before pruning (as in a run), MiniLM profile,
# full runs against Trainer (its steady rate too), MiniLM-L6 on SST-2 and the BERT-base shape, one call each
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
git log --oneline -1 > $OUT/progress.txt 2>&1; git status --short >> $OUT/progress.txt
j() { echo "{\"call\": \"tools/bench.py $*\"}" >> $OUT/bench.jsonl; timeout 80 python3 tools/bench.py "$@" >> $OUT/bench.jsonl 2>>$OUT/bench.err; }
res() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ('task','model','sparsity_target','metrics','train_samples_per_s','run_samples_per_s','train_time_s','teacher_time_s','eval_time_s','wall_time_s','samples')  if k in r}))" $1 >> $OUT/bench.jsonl; }
for rep in 1 2 3; do j step --model $M --length 32 --steps 300 --only on_dense,on_gmp; done
j step --model config:bert-base --length 128 --steps 150 --only on_dense,on_gmp
j profile --model $M --length 32
echo "benches done at $SECONDS" >> $OUT/progress.txt
timeout 70 python3 prune.py --task sst2 --recipe dense --model $M --data_dir $D --lr 5e-5 --out $R/teacher > /dev/null 2>$R.t.log
timeout 130 python3 prune.py --task sst2 --model $M --teacher $R/teacher/model --data_dir $D --sparsity 0.9 --out $R/minilm > /dev/null 2>$R.m.log
echo '{"call": "prune.py --task sst2 --model minilm --sparsity 0.9 (GMP*, KD)"}' >> $OUT/bench.jsonl; res $R/minilm/results.json
j trainer --model $M --data_dir $D --steps 1000 --out /tmp/tr1
echo "minilm runs done at $SECONDS" >> $OUT/progress.txt
python3 -c "
from transformers import AutoModelForSequenceClassification, BertConfig, AutoTokenizer
import torch; torch.manual_seed(0)
AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).save_pretrained('/tmp/bertbase')
AutoTokenizer.from_pretrained('$M').save_pretrained('/tmp/bertbase')" 2>/dev/null
timeout 120 python3 prune.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples 10000 --sparsity 0.9 --out $R/bert > /dev/null 2>$R.b.log
echo '{"call": "prune.py --task sst2 --model bert-base-shape --max_train_samples 10000 --sparsity 0.9 (GMP*, KD)"}' >> $OUT/bench.jsonl; res $R/bert/results.json
j trainer --model /tmp/bertbase --data_dir $D --steps 600 --out /tmp/tr2
echo "all done at $SECONDS" >> $OUT/progress.txt
j step --model config:bert-base --length 128 --steps 150 --only on_dense,on_gmp
echo "extra done at $SECONDS" >> $OUT/progress.txt
