#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine with no package access (docs/gpu.md has the results).
#
#   bash bench/gpu_check.sh OUT_DIR
#
# Expects python3 with torch (CUDA), transformers and tokenizers; rlpipe's other pure-Python needs (Hydra,
# OmegaConf, ANTLR) as wheels in .whl/, and optionally a warm-start cache in .gpucache/ (RLPIPE_CACHE). Each part
# has its own time limit so one slow part cannot use up the machine.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/rlpipe-site .whl/*.whl \
    && export PYTHONPATH=/tmp/rlpipe-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -d .gpucache ] && export RLPIPE_CACHE=$PWD/.gpucache

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"

echo "== parity: learner (FSDP2, NCCL, fp32) -> weight push -> HF engine logprobs"
timeout 240 python3 bench/gpu_learner.py parity --out "$OUT/parity.json" 2>&1 | grep -v "it/s\]" | tail -n 15

echo "== throughput: Qwen2.5-0.5B shape, bf16, FSDP2 on one GPU"
timeout 300 python3 bench/gpu_learner.py throughput --out "$OUT/throughput.json" 2>&1 | grep -v "it/s\]" | tail -n 25

echo "== the training loop on CUDA: cluster=local rollout=hf, a short smoke run (not a learning claim)"
timeout 300 python3 -m rlpipe.train cluster=local rollout=hf trainer.total_steps=4 trainer.eval_every_steps=4 \
  data.prompts_per_step=8 rollout.samples_per_prompt=4 data.heldout_size=32 logger.progress_bar=false \
  trainer.output_dir=/tmp/rlpipe-gpu-run 2>&1 | grep -v "it/s\]" | tail -n 30
cp /tmp/rlpipe-gpu-run/summary.json "$OUT/run_summary.json" 2>/dev/null
cp /tmp/rlpipe-gpu-run/metrics.jsonl "$OUT/run_metrics.jsonl" 2>/dev/null
echo "== done"
