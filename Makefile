# The two commands of the README:
#   make demo   - set up (first time) and run the default training job
#   make test   - set up (first time) and run the test suite: exactly what CI runs (.ci/run is `make test`)
SHELL := /bin/bash
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline
ifeq ($(shell command -v nvidia-smi),)
export DS_ACCELERATOR ?= cpu
endif
export GLOO_SOCKET_IFNAME ?= lo

.PHONY: setup demo test test-fast bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m rlpipe.train $(ARGS)

# The same as CI (.ci/run): system packages some tests need (bubblewrap, Slurm, munge), installed when they are
# missing and we can (root + apt), otherwise named with the tests that will skip; then every test.
test: setup
	@bash .ci/system-deps.sh
	$(PY) -m pytest -q --timeout=1800 --durations=25 $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" --timeout=600 $(ARGS)

bench: setup
	$(PY) bench/step_throughput.py $(ARGS)
