#!/usr/bin/env bash
# System packages some tests need beyond Python: bubblewrap (the code sandbox), and a real Slurm with munge (the
# launch test). Installed only when missing and when we can (root + apt); otherwise those tests say why they skip.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[deps] missing ${need[*]} and cannot install them here (not root, or no apt-get). These tests will skip:" >&2
  [[ " ${need[*]} " == *" bubblewrap "* ]] && echo "[deps]   bubblewrap: tests/verify/test_code_verifier.py (sandboxed runs)," \
    "tests/verify/test_sandbox_hostile.py; the fail-closed tests still run" >&2
  [[ " ${need[*]} " == *" slurm-wlm "* || " ${need[*]} " == *" munge "* ]] && \
    echo "[deps]   slurm-wlm/munge: tests/launch/test_slurm.py" >&2
  exit 0
fi
echo "[deps] installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
