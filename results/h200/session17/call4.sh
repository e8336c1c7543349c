# session 17, call 4: where the BERT-base-shape full run's training time goes (10,000 and 20,000 SST-2 rows)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
python3 -c "
from transformers import AutoModelForSequenceClassification, BertConfig, AutoTokenizer
import torch; torch.manual_seed(0)
AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).save_pretrained('/tmp/bertbase')
AutoTokenizer.from_pretrained('$M').save_pretrained('/tmp/bertbase')" 2>/dev/null
for n in 10000 20000; do
  timeout $((195 - SECONDS)) python3 results/h200/session17/run_timing.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples $n --sparsity 0.9 --out $R/bert$n 2>$OUT/bert$n.log | tail -1 >> $OUT/timing.jsonl
done
echo "done at $SECONDS" >> $OUT/timing.jsonl
