# session 17, call 2: MiniLM-L6 mask overhead and AdamW alone, MiniLM profile, MiniLM SST-2 teacher + GMP* 90% vs Trainer, BERT-base shape vs Trainer
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
git log --oneline -1 > $OUT/progress.txt 2>&1
j() { echo "{\"call\": \"tools/bench.py $*\"}" >> $OUT/bench.jsonl; timeout 80 python3 tools/bench.py "$@" >> $OUT/bench.jsonl 2>>$OUT/bench.err; }
j adam --model $M --length 32
for rep in 1 2 3; do j step --model $M --length 32 --steps 300 --only on_dense,on_gmp; done
j profile --model $M --length 32
echo "benches done at $SECONDS" >> $OUT/progress.txt
timeout 70 python3 prune.py --task sst2 --recipe dense --model $M --data_dir $D --lr 5e-5 --out $R/teacher 2>$R.t.log | tail -1 > $OUT/runs.txt
tail -1 $R.t.log >> $OUT/runs.txt
timeout 130 python3 prune.py --task sst2 --model $M --teacher $R/teacher/model --data_dir $D --sparsity 0.9 --out $R/minilm 2>$R.m.log | tail -1 >> $OUT/runs.txt
tail -1 $R.m.log >> $OUT/runs.txt
timeout 70 python3 tools/bench.py trainer --model $M --data_dir $D --out /tmp/tr1 2>/dev/null | tail -1 >> $OUT/runs.txt
echo "minilm runs done at $SECONDS" >> $OUT/progress.txt
python3 -c "
from transformers import AutoModelForSequenceClassification, BertConfig, AutoTokenizer
import torch; torch.manual_seed(0)
AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).save_pretrained('/tmp/bertbase')
AutoTokenizer.from_pretrained('$M').save_pretrained('/tmp/bertbase')" 2>/dev/null
timeout 120 python3 prune.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples 10000 --sparsity 0.9 --out $R/bert 2>$R.b.log | tail -1 >> $OUT/runs.txt
tail -1 $R.b.log >> $OUT/runs.txt
timeout $((590 - SECONDS)) python3 tools/bench.py trainer --model /tmp/bertbase --data_dir $D --steps 300 --out /tmp/tr2 2>/dev/null | tail -1 >> $OUT/runs.txt
echo "all done at $SECONDS" >> $OUT/progress.txt
