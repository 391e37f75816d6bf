#!/usr/bin/env bash
# Submit an rlpipe training job to a running Ray cluster.
#
#   launch/ray/submit.sh [--address http://HEAD:8265] [--no-wait] [--] [hydra overrides...]
#
# The address defaults to $RAY_ADDRESS, then http://127.0.0.1:8265. Without --no-wait it follows the job's logs and
# exits with the job's status (0 only if it SUCCEEDED). RLPIPE_PYTHON names the interpreter the job runs with on the
# cluster (default: `python` on the head node's PATH). Clusters with token authentication: the token is read as Ray
# reads it (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
set -euo pipefail
cd "$(dirname "$0")/../.."

address=${RAY_ADDRESS:-http://127.0.0.1:8265}
follow=1
while [ $# -gt 0 ]; do
  case "$1" in
    --address) address=$2; shift 2 ;;
    --no-wait) follow=0; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
RAY=${RAY:-ray}

# A freshly started head can refuse submissions for a few seconds ("No available agent"); nothing was created then,
# so retrying is safe. Any other error is final.
for attempt in $(seq 1 30); do
  if out=$("$RAY" job submit --address "$address" --runtime-env launch/ray/runtime_env.yaml --no-wait \
        -- "${RLPIPE_PYTHON:-python}" -m rlpipe.train "$@" 2>&1); then
    break
  fi
  if grep -q "No available agent" <<<"$out" && [ "$attempt" -lt 30 ]; then
    sleep 2
    continue
  fi
  echo "$out" >&2
  exit 1
done
job_id=$(grep -oE "raysubmit_[A-Za-z0-9]+" <<<"$out" | head -n 1)
echo "[rlpipe] submitted $job_id to $address"
[ "$follow" = 1 ] || exit 0

"$RAY" job logs --address "$address" --follow "$job_id" || true
status=$("$RAY" job status --address "$address" "$job_id" 2>&1) || true
# Ray 2.5x prints "Job '<id>' succeeded"; older versions "Status for job '<id>': SUCCEEDED".
if grep -qiE "job '$job_id' succeeded|: SUCCEEDED" <<<"$status"; then
  echo "[rlpipe] job $job_id: SUCCEEDED"
  exit 0
fi
echo "[rlpipe] job $job_id did not succeed:" >&2
echo "$status" >&2
exit 1
