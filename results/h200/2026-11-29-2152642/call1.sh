# call 1 on 2152642 (prune.py registers itself as 'prune' for tools/fast.py): the GPU tests and the CUDA fault
# matrix with graphs on (the real CLI killed and resumed), beside the MiniLM-L6 SST-2 teacher and GMP* 90% student
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
P=$OUT/call1_progress.txt
{ git status --short | head; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)"; } > $P 2>&1
T=test_prune.py::test_on_cuda_a_run_killed_anywhere_resumes_to_the_same_masks_weights_and_metrics
(timeout 560 python3 -m pytest -v -p no:cacheprovider test_prune.py -k "(cuda or graphed or fast_path or fused_weight_grads or non_finite or without_tools_fast or running_prune_module) and not on_cuda_a_run_killed" > $OUT/call1_pytest_gpu.log 2>&1; echo "pytest gpu rc $? at $SECONDS" >> $P) &
(timeout 560 python3 -m pytest -v -p no:cacheprovider "$T[on]" > $OUT/call1_pytest_faults_on.log 2>&1; echo "faults on rc $? at $SECONDS" >> $P) &
R=/tmp/runs/mini; mkdir -p $R
M="--task sst2 --model .carry/minilm --data_dir .carry/data/glue/sst2"
timeout 560 python3 prune.py $M --recipe dense --lr 5e-05 --out $R/teacher-sst2 > $OUT/call1_teacher_sst2.log 2>&1
echo "teacher rc $? at $SECONDS" >> $P
timeout $((565 - SECONDS)) python3 prune.py $M --teacher $R/teacher-sst2/model --sparsity 0.9 --lr 0.0001 --out $R/sst2-s90-seed0 > $OUT/call1_sst2_s90.log 2>&1
echo "student rc $? at $SECONDS" >> $P
wait
for r in teacher-sst2 sst2-s90-seed0; do mkdir -p $OUT/$r; cp $R/$r/results.json $R/$r/log.jsonl $OUT/$r/ 2>/dev/null; done
echo "end at $SECONDS" >> $P
