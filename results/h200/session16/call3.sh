# session 16, call 3: fast GPU tests, MiniLM SST-2 end-to-end (expect 0.87385), BERT-base run vs Trainer in one call, CUDA fault matrix (on)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=.carry/minilm D=.carry/sst2 R=/tmp/runs
timeout 100 python3 -m pytest -v -p no:cacheprovider test_prune.py -k "fused_weight_grads or graphed or fast_path or stay_bit" > $OUT/pytest_fast.log 2>&1
echo "pytest_fast rc $? at $SECONDS" >> $OUT/progress.txt
timeout 70 python3 prune.py --task sst2 --recipe dense --model $M --data_dir $D --lr 5e-5 --out $R/teacher 2>$R.t.log | tail -1 > $OUT/minilm.txt
tail -2 $R.t.log >> $OUT/minilm.txt
timeout 130 python3 prune.py --task sst2 --model $M --teacher $R/teacher/model --data_dir $D --sparsity 0.9 --out $R/minilm 2>$R.m.log | tail -1 >> $OUT/minilm.txt
tail -3 $R.m.log >> $OUT/minilm.txt
echo "minilm done at $SECONDS" >> $OUT/progress.txt
python3 -c "
from transformers import AutoModelForSequenceClassification, BertConfig, AutoTokenizer
import torch; torch.manual_seed(0)
AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).save_pretrained('/tmp/bertbase')
AutoTokenizer.from_pretrained('$M').save_pretrained('/tmp/bertbase')" 2>/dev/null
timeout 120 python3 prune.py --task sst2 --model /tmp/bertbase --teacher /tmp/bertbase --data_dir $D --max_train_samples 10000 --sparsity 0.9 --out $R/bert 2>$R.b.log | tail -1 > $OUT/bert.txt
tail -3 $R.b.log >> $OUT/bert.txt
timeout 60 python3 tools/bench.py trainer --model /tmp/bertbase --data_dir $D --steps 300 --out /tmp/tr2 2>/dev/null | tail -1 >> $OUT/bert.txt
echo "bert done at $SECONDS" >> $OUT/progress.txt
timeout $((520 - SECONDS)) python3 -m pytest -v -p no:cacheprovider --durations=5 test_prune.py -k "on_cuda_a_run_killed and not off" > $OUT/pytest_faults.log 2>&1
echo "faults rc $? at $SECONDS" >> $OUT/progress.txt
