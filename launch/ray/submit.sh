#!/usr/bin/env bash
# Submit an rlpipe training job to a running Ray cluster.
#
#   launch/ray/submit.sh [--address http://HEAD:8265] [--no-wait] [--] [hydra overrides...]
#
# The address defaults to $RAY_ADDRESS, then http://127.0.0.1:8265. Without --no-wait it follows the job's logs and
# exits with the job's status (0 only if it SUCCEEDED). RLPIPE_PYTHON names the interpreter the job runs with on the
# cluster (default: `python` on the head node's PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."

address=${RAY_ADDRESS:-http://127.0.0.1:8265}
wait_flag=()
while [ $# -gt 0 ]; do
  case "$1" in
    --address) address=$2; shift 2 ;;
    --no-wait) wait_flag=(--no-wait); shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done

RAY=${RAY:-ray}
exec "$RAY" job submit --address "$address" --runtime-env launch/ray/runtime_env.yaml "${wait_flag[@]}" \
  -- "${RLPIPE_PYTHON:-python}" -m rlpipe.train "$@"
