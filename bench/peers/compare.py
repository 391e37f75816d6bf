"""TRL's GRPOTrainer against rlpipe on the same cores: one run after the other, one table per workload.

    .venv/bin/python bench/peers/compare.py [--workload default|genheavy|both] [--steps N]
                                            [--modes trl1,trl2,rlpipe_sync,rlpipe_async] [--results PATH]

Run with rlpipe's venv python. TRL runs in its own venv (bench/peers/.venv-trl, created on first use by
setup_trl.sh; TRL is never a dependency of rlpipe). Modes, in this order:

  trl1          TRL GRPOTrainer (transformers generate, use_vllm=False), one process, torch with 1 thread
  trl2          the same with 2 threads
  rlpipe_sync   python -m rlpipe.train (Ray actors: vLLM rollout, FSDP2 learner ranks, verifier)
  rlpipe_async  the same with trainer.max_staleness_steps=1 (generation of the next step overlaps training)
  rlpipe_async_rollout  rlpipe_async + algorithm.old_logprobs=rollout (no old-logprob forward on the learner)

Every run's whole process tree (Ray's raylet, GCS and worker processes included) is sampled every 0.25 s for CPU
seconds and resident memory. A mode that fails is reported as "failed: <one line>" and the next one runs.
See bench/peers/README.md for what each column means and the settings mapping.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RLPIPE_PY = Path(sys.executable)
TRL_VENV = Path(os.environ.get("TRL_VENV", HERE / ".venv-trl"))
TRL_PY = TRL_VENV / "bin" / "python"
ALL_MODES = ("trl1", "trl2", "rlpipe_sync", "rlpipe_async", "rlpipe_async_rollout")

# The two workloads. "rlpipe" are Hydra overrides on top of the default job; "trl" the matching trl_grpo.py flags;
# "model" the settings model_dir() is resolved with.
WORKLOADS: dict[str, dict[str, Any]] = {
    "default": {
        "title": "default job: warm-started tiny Qwen2 (~1M parameters), 32 prompts x 8 samples x <=64 tokens, "
                 "KL 0.001",
        "model": {},
        "rlpipe": [],
        "trl": ["--prompts-per-step", "32", "--samples-per-prompt", "8", "--max-new-tokens", "64", "--beta", "0.001"],
        "eval": "every",  # held-out accuracy at step 0, every --eval-every steps and at the last step
    },
    "genheavy": {
        "title": "generation-heavy: random-init ~17M-parameter Qwen2, 8 prompts x 8 samples x <=128 tokens, KL off",
        "model": {"size": "medium", "warmstart_steps": 0},
        "rlpipe": ["model.tiny.size=medium", "model.tiny.warmstart_steps=0", "data.prompts_per_step=8",
                   "rollout.max_response_tokens=128", "algorithm.kl_coef=0"],
        "trl": ["--prompts-per-step", "8", "--samples-per-prompt", "8", "--max-new-tokens", "128", "--beta", "0"],
        # A random-init model scores 0 and 256 greedy 128-token answers cost ~30-60 s: only at step 0 and the end
        # (rlpipe always evaluates there), unless --genheavy-eval-every says otherwise.
        "eval": "ends",
    },
}

# Environment of every run (see /work/shared/RUNNING-HERE.md); thread counts are set per mode.
BASE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled", "DS_ACCELERATOR": "cpu", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false",
    "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
}


# --- process-tree sampling ----------------------------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Cumulative CPU seconds (user + system) and summed RSS of a process and all its descendants, sampled.

    Each process is keyed by (pid, create time) and keeps its last-seen CPU time after it exits, so the total never
    drops; a process that lives less than one interval is missed. Children's reaped times (cutime) are not used:
    they would count the same seconds twice. Also notes when new lines appear in ``watch`` files.
    """

    def __init__(self, pid: int, interval: float = 0.25, watch: Optional[Path] = None):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.watch = watch
        self.cpu: dict[tuple[int, float], float] = {}
        self.timeline: list[tuple[float, float]] = []  # (unix time, cumulative CPU seconds of the tree)
        self.machine: list[tuple[float, float]] = []  # (unix time, cumulative busy CPU seconds of the whole machine)
        self.peak_rss = 0
        self.max_procs = 0
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self.arrivals: list[float] = []  # unix time at which each line of ``watch`` was first seen
        self._lines = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        now = time.time()
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            procs = []
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    self.cpu[key] = t.user + t.system
                    rss += p.memory_info().rss
                self.seen.setdefault(key, p)
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.max_procs = max(self.max_procs, len(procs))
        self.timeline.append((now, sum(self.cpu.values())))
        self.machine.append((now, machine_busy_seconds()))
        if self.watch is not None and self.watch.exists():
            try:
                n = self.watch.read_bytes().count(b"\n")
            except OSError:
                n = self._lines
            self.arrivals += [now] * max(0, n - self._lines)
            self._lines = max(self._lines, n)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.sample()

    def cpu_at(self, t: float, series: Optional[list] = None) -> float:
        """Cumulative tree (or ``series``) CPU seconds at time t (linear interpolation between samples)."""
        tl = self.timeline if series is None else series
        if not tl:
            return 0.0
        if t <= tl[0][0]:
            return tl[0][1]
        for (t0, c0), (t1, c1) in zip(tl, tl[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(1e-9, t1 - t0)
        return tl[-1][1]

    def busy(self, intervals: list[tuple[float, float]], series: Optional[list] = None) -> Optional[float]:
        """CPU seconds of the tree (or ``series``) / wall seconds, summed over the (start, end) unix-time intervals."""
        intervals = [(a, b) for a, b in intervals if a is not None and b is not None and b > a]
        wall = sum(b - a for a, b in intervals)
        if wall <= 0:
            return None
        return sum(self.cpu_at(b, series) - self.cpu_at(a, series) for a, b in intervals) / wall

    def foreign(self, intervals: list[tuple[float, float]]) -> Optional[float]:
        """Busy cores of everything else on the machine during the intervals (machine-wide minus this tree)."""
        mine, machine = self.busy(intervals), self.busy(intervals, self.machine)
        return None if mine is None or machine is None else max(0.0, machine - mine)

    def leftovers(self) -> list[psutil.Process]:
        alive = []
        for (pid, created), p in self.seen.items():
            try:
                if p.is_running() and p.create_time() == created and p.pid != self.root.pid:
                    alive.append(p)
            except psutil.Error:
                pass
        return alive


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))


def wait_for_quiet(limit_s: float, threshold: float = 0.35, window_s: float = 10.0) -> float:
    """Wait (up to limit_s) until the rest of the machine uses under ``threshold`` cores over ``window_s``; returns
    the last measured load. Other people's jobs on 2 shared cores would otherwise end up in the figures."""
    deadline, load = time.time() + limit_s, 0.0
    announced = False
    while True:
        c0, t0 = machine_busy_seconds(), time.time()
        time.sleep(window_s)
        load = (machine_busy_seconds() - c0) / (time.time() - t0)
        if load < threshold or time.time() >= deadline:
            return load
        if not announced:
            print(f"  waiting for the machine to quieten down (other processes use {load:.1f} cores)", flush=True)
            announced = True


def stop_tree(root: subprocess.Popen, sampler: Optional[TreeSampler], grace: float = 8.0) -> None:
    """SIGTERM then SIGKILL this run's own processes (the root and every descendant the sampler saw), by pid."""
    procs = []
    try:
        procs = [psutil.Process(root.pid)] + psutil.Process(root.pid).children(recursive=True)
    except psutil.Error:
        pass
    if sampler is not None:
        procs += [p for p in sampler.leftovers() if p not in procs]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


# --- one run ------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    mode: str
    status: str = "ok"
    command: list[str] = field(default_factory=list)
    log: str = ""
    wall_s: float = 0.0
    steps: list[dict] = field(default_factory=list)  # step, step_s, gen_s, samples, generated_tokens, t_start, t_end
    evals: list[dict] = field(default_factory=list)  # step, accuracy, elapsed_s, eval_s
    startup_s: Optional[float] = None
    step_time_source: str = ""
    busy_cores: Optional[float] = None
    busy_cores_whole_run: Optional[float] = None
    foreign_cores: Optional[float] = None  # other processes on the machine during the steps
    load_before: Optional[float] = None
    cpu_s: Optional[float] = None
    peak_rss_gb: Optional[float] = None
    max_processes: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        s = {"mode": self.mode, "status": self.status}
        if not self.steps:
            return s
        step_s = [r["step_s"] for r in self.steps]
        total = sum(step_s)
        s.update(
            steps=len(self.steps),
            median_step_s=statistics.median(step_s),
            mean_step_s=total / len(step_s),
            median_generate_s=_median([r.get("gen_s") for r in self.steps]),
            samples_per_s=sum(r["samples"] for r in self.steps) / total if total else None,
            gen_tokens_per_s=sum(r["generated_tokens"] for r in self.steps) / total if total else None,
            samples_per_step=statistics.median(r["samples"] for r in self.steps),
            gen_tokens_per_step=statistics.median(r["generated_tokens"] for r in self.steps),
            startup_s=self.startup_s,
            busy_cores=self.busy_cores,
            busy_cores_whole_run=self.busy_cores_whole_run,
            foreign_cores=self.foreign_cores,
            load_before=self.load_before,
            peak_rss_gb=self.peak_rss_gb,
            accuracy={str(e["step"]): {"accuracy": e["accuracy"], "wall_s": e.get("elapsed_s")} for e in self.evals},
            step_time_source=self.step_time_source,
        )
        return s


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def one_line_error(log_path: Path, rc: int) -> str:
    """The most telling line of a failed run's log: the last exception line, else the last non-empty line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    lines = [line for line in lines if "HYDRA_FULL_ERROR" not in line]
    for i, line in enumerate(lines):  # Hydra's override errors: "Could not override 'x'." ... "Key 'y' not in ..."
        if line.startswith("Could not override") or line.startswith("Error merging override"):
            detail = next((d for d in lines[i + 1:] if d.startswith("Key ")), "")
            return f"{line} {detail}".strip()[:300]
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line or line.startswith("error")) and not line.startswith("File "):
            return line[:300]
    return (lines[-1][:300] if lines else f"exit status {rc}")


def launch(mode: str, cmd: list[str], env: dict, run_dir: Path, timeout_s: float,
           watch: Optional[Path]) -> tuple[RunResult, TreeSampler, float]:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{mode}.log"
    result = RunResult(mode=mode, command=cmd, log=str(log_path))
    print(f"  [{mode}] {' '.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = None
        try:
            sampler = TreeSampler(proc.pid, watch=watch)
            sampler.start()
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        except BaseException:  # interrupted, or the sampler broke: never leave this run's processes behind
            stop_tree(proc, sampler)
            raise
        if rc is None:
            stop_tree(proc, sampler)
            result.status = f"failed: timed out after {timeout_s:.0f} s"
        sampler.stop()
        deadline = time.time() + 15  # Ray's processes wind down for a few seconds after the driver exits
        while sampler.leftovers() and time.time() < deadline:
            time.sleep(0.5)
        left = sampler.leftovers()
        if left:  # processes this run started that outlived it: stop them (by pid, only these)
            names = []
            for p in left:
                try:
                    names.append(f"{p.pid} {' '.join(p.cmdline())[:60] or p.name()}")
                except psutil.Error:
                    names.append(str(p.pid))
            result.extra["leftovers"] = names
            print(f"  [{mode}] {len(left)} process(es) of this run outlived it by 15 s, stopping them: "
                  f"{'; '.join(names)}", flush=True)
            stop_tree(proc, sampler, grace=5)
    result.wall_s = time.time() - t0
    if rc not in (0, None):
        result.status = "failed: " + one_line_error(log_path, rc)
    result.cpu_s = sampler.timeline[-1][1] if sampler.timeline else None
    result.peak_rss_gb = sampler.peak_rss / 2**30
    result.max_processes = sampler.max_procs
    if sampler.timeline:
        result.busy_cores_whole_run = result.cpu_s / max(1e-9, sampler.timeline[-1][0] - t0)
    return result, sampler, t0


def run_trl(mode: str, threads: int, workload: str, model: str, steps: int, eval_every: int, run_dir: Path,
            timeout_s: float) -> RunResult:
    out = run_dir / f"{mode}.jsonl"
    cmd = [str(TRL_PY), str(HERE / "trl_grpo.py"), "--model", model, "--out", str(out), "--steps", str(steps),
           "--threads", str(threads), "--eval-every", str(eval_every), "--workdir", str(run_dir / f"{mode}-trl"),
           *WORKLOADS[workload]["trl"]]
    env = {**os.environ, **BASE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result, sampler, _ = launch(mode, cmd, env, run_dir, timeout_s, watch=None)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    for r in rows:
        if r["kind"] == "step":
            result.steps.append({k: r.get(k) for k in ("step", "step_s", "gen_s", "score_s", "train_s", "samples",
                                                       "generated_tokens", "reward_mean", "t_start", "t_end",
                                                       "elapsed_s")})
        elif r["kind"] == "eval":
            result.evals.append({k: r.get(k) for k in ("step", "accuracy", "correct", "n", "elapsed_s", "eval_s",
                                                       "format_rate", "response_len", "first_texts")})
        elif r["kind"] == "startup":
            result.startup_s = r["startup_s"]
        elif r["kind"] in ("meta", "samples"):
            result.extra[r["kind"]] = r
    result.step_time_source = "trl_grpo.py callback (step end to step end, evaluations excluded)"
    result.busy_cores = sampler.busy([(r["t_start"], r["t_end"]) for r in result.steps])
    result.foreign_cores = sampler.foreign([(r["t_start"], r["t_end"]) for r in result.steps])
    if result.status == "ok" and len(result.steps) < steps:
        result.status = f"failed: only {len(result.steps)} of {steps} steps logged"
    return result


def rlpipe_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_rlpipe(mode: str, workload_overrides: list[str], steps: int, eval_every: int, run_dir: Path,
               timeout_s: float) -> RunResult:
    out_dir = run_dir / mode
    overrides = [f"trainer.total_steps={steps}", f"trainer.eval_every_steps={eval_every}",
                 f"trainer.output_dir={out_dir}", "trainer.resume=never", "logger.progress_bar=false",
                 *workload_overrides]
    if mode.startswith("rlpipe_async"):
        overrides.append("trainer.max_staleness_steps=1")
    if mode == "rlpipe_async_rollout":  # the engine's logprobs as the behaviour policy: no recompute forward
        overrides.append("algorithm.old_logprobs=rollout")
    cmd = [str(RLPIPE_PY), "-m", "rlpipe.train", *overrides]
    env = {**os.environ, **BASE_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)  # always a private local Ray instance, never someone else's cluster
    metrics_path = out_dir / "metrics.jsonl"
    result, sampler, t_launch = launch(mode, cmd, env, run_dir, timeout_s, watch=metrics_path)
    rows = rlpipe_rows(metrics_path)
    # Unix time at which each row was logged: the driver's own clock when it logs time/elapsed_s (seconds since its
    # process started), else when the row appeared in the file (0.25 s polling).
    process_start = t_launch
    try:
        process_start = psutil.Process(result_pid(sampler)).create_time()
    except (psutil.Error, TypeError):
        pass
    has_elapsed = bool(rows) and all("time/elapsed_s" in r for r in rows)
    logged_at = []
    for i, r in enumerate(rows):
        if has_elapsed:
            logged_at.append(process_start + r["time/elapsed_s"])
        elif i < len(sampler.arrivals):
            logged_at.append(sampler.arrivals[i])
        else:
            logged_at.append(None)
    phase_keys = lambda r: [k for k in r if k.startswith("timing/") and k not in ("timing/eval", "timing/step")]  # noqa: E731
    eval0_s = 0.0
    prev_logged = None
    sources = set()
    for r, at in zip(rows, logged_at):
        eval_s = r.get("timing/eval", 0.0) or 0.0
        if "eval/accuracy" in r:
            result.evals.append({"step": r["step"], "accuracy": r["eval/accuracy"], "eval_s": eval_s,
                                 "elapsed_s": (at - process_start) if at is not None else None,
                                 "format_rate": r.get("eval/format_rate"), "response_len": r.get("eval/response_len")})
        if r["step"] == 0:
            eval0_s = eval_s
            prev_logged = at
            continue
        phases = sum(r[k] for k in phase_keys(r))
        if has_elapsed and prev_logged is not None:
            # Wall clock between consecutive rows, minus this row's evaluation: the same measure as the TRL side,
            # and the only honest one when generation overlaps training (async).
            step_s, source = at - prev_logged - eval_s, "time/elapsed_s between rows"
        elif "timing/step" in r:
            step_s, source = r["timing/step"], "timing/step"
            if eval_s and step_s > phases + 0.5 * eval_s:  # a timing/step that includes the evaluation
                step_s -= eval_s
                source = "timing/step - timing/eval"
        else:
            step_s, source = phases, "sum of timing/* phases"
        sources.add(source)
        end = (at - eval_s) if at is not None else None
        result.steps.append({
            "step": r["step"], "step_s": step_s, "gen_s": r.get("timing/generate"),
            "timing_step": r.get("timing/step"), "phase_sum": phases,
            "phases": {k: r[k] for k in phase_keys(r)},
            "samples": r.get("rollout/num_samples", 0), "generated_tokens": r.get("rollout/generated_tokens", 0),
            "reward_mean": r.get("rollout/reward_mean"),
            "t_start": end - step_s if end is not None else None, "t_end": end,
            "elapsed_s": (at - process_start) if at is not None else None,
        })
        prev_logged = at
    result.step_time_source = ", ".join(sorted(sources))
    if result.steps and result.steps[0]["t_start"] is not None:
        result.startup_s = result.steps[0]["t_start"] - process_start - eval0_s
        result.busy_cores = sampler.busy([(s["t_start"], s["t_end"]) for s in result.steps])
        result.foreign_cores = sampler.foreign([(s["t_start"], s["t_end"]) for s in result.steps])
    ledger = out_dir / "ledger.jsonl"
    if ledger.exists():
        first = ledger.read_text().splitlines()[:1]
        if first:
            result.extra["ledger_step1"] = json.loads(first[0])
    if result.status == "ok" and len(result.steps) < steps:
        result.status = f"failed: only {len(result.steps)} of {steps} steps logged"
    return result


def result_pid(sampler: TreeSampler) -> int:
    return sampler.root.pid


# --- set-up and checks --------------------------------------------------------------------------------------------


RESOLVE_MODEL = r"""
import json, sys
settings = json.loads(sys.argv[1])
from rlpipe.config.schema import Config
cfg = Config()
for k, v in settings.items():
    setattr(cfg.model.tiny, k, v)
from rlpipe.driver.build import model_dir
print(json.dumps({"path": str(model_dir(cfg)), "how": "rlpipe.driver.build.model_dir"}))
"""

RLPIPE_PROMPTS = r"""
import json, sys
from transformers import AutoTokenizer
from rlpipe.config.schema import Config
from rlpipe.tasks.arithmetic import TrainStream, heldout_set
model, n = sys.argv[1], int(sys.argv[2])
data = Config().data
heldout = heldout_set(n=data.heldout_size, seed=data.seed + 1)
try:  # what rlpipe's driver does
    from rlpipe.driver.prompts import build_prompts, chat_tokenizer
    source, _ = build_prompts(data)
    items = source.next_batch(n)
    tokenize, tok = chat_tokenizer(model, data.max_prompt_tokens)
    out = [{"uid": it.uid, "question": it.messages[-1]["content"], "ids": tokenize(it),
            "text": tok.apply_chat_template(list(it.messages), add_generation_prompt=True, tokenize=False)}
           for it in items]
    how = "rlpipe.driver.prompts"
except Exception as e:
    tok = AutoTokenizer.from_pretrained(model)
    stream = TrainStream(seed=data.seed, exclude={p.question for p in heldout})
    out = []
    for _ in range(n):
        p = stream.next()
        text = tok.apply_chat_template([{"role": "user", "content": p.question}], add_generation_prompt=True,
                                       tokenize=False)
        out.append({"uid": p.uid, "question": p.question, "text": text,
                    "ids": tok(text, add_special_tokens=False)["input_ids"]})
    how = f"rlpipe.tasks.arithmetic (driver.prompts not importable: {type(e).__name__})"
print(json.dumps({"how": how, "prompts": out}))
"""


def rlpipe_python(code: str, *args: str, timeout: float = 1800) -> dict:
    env = {**os.environ, **BASE_ENV, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([str(RLPIPE_PY), "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"rlpipe helper failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_trl_venv() -> dict:
    proc = subprocess.run(["bash", str(HERE / "setup_trl.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"setup_trl.sh failed:\n{proc.stdout}\n{proc.stderr}")
    versions = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("trl", "transformers", "accelerate", "datasets", "torch", "psutil"):
            versions[parts[0]] = parts[1]
    return versions


def fairness(workload: str, model: str, results: dict[str, RunResult], prompts_per_step: int) -> list[str]:
    """Same first prompts (uids, rendered text, token ids) on both sides; TRL's decoding; step-0 accuracy."""
    notes = []
    try:
        ref = rlpipe_python(RLPIPE_PROMPTS, model, str(prompts_per_step), timeout=300)
    except Exception as e:  # noqa: BLE001
        return [f"could not compute rlpipe's prompts: {e}"]
    ref_uids = [p["uid"] for p in ref["prompts"]]
    notes.append(f"rlpipe's first training prompt ({ref['how']}): {ref['prompts'][0]['text']!r}")
    for name, r in results.items():
        if name.startswith("trl") and "meta" in r.extra:
            meta, samples = r.extra["meta"], r.extra.get("samples", {})
            same_uids = meta["first_uids"] == ref_uids
            same_text = meta["first_prompts"] == [p["text"] for p in ref["prompts"][:3]]
            ids = samples.get("prompt_ids")
            same_ids = ids == [p["ids"] for p in ref["prompts"]] if ids else None
            notes.append(f"{name}: first {len(ref_uids)} prompts identical to rlpipe's: uids {_yn(same_uids)}, "
                         f"rendered text {_yn(same_text)}, token ids TRL fed to generate {_yn(same_ids)}")
            for s in samples.get("samples", [])[:2]:
                notes.append(f"{name}: a step-1 completion as TRL decoded it: {s['completion']!r} "
                             f"(gold {s['answer']}: {s['verdict']}, reward {s['reward']})")
        ledger = r.extra.get("ledger_step1")
        if name.startswith("rlpipe") and ledger:
            uids = list(dict.fromkeys(s.split("#")[0] for s in ledger["samples"]))
            notes.append(f"{name}: step-1 ledger prompts are the expected first {len(ref_uids)}: "
                         f"{_yn(uids == ref_uids)}")
    acc0 = {n: next((e["accuracy"] for e in r.evals if e["step"] == 0), None) for n, r in results.items()}
    acc0 = {n: a for n, a in acc0.items() if a is not None}
    if acc0:
        notes.append("held-out greedy accuracy at step 0: " + ", ".join(f"{n} {100 * a:.1f}%" for n, a in acc0.items()))
    return notes


def _yn(v: Optional[bool]) -> str:
    return "n/a" if v is None else ("yes" if v else "NO")


# --- report -------------------------------------------------------------------------------------------------------


def fmt(v: Optional[float], spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def table(workload: str, results: list[RunResult], eval_steps: list[int]) -> str:
    acc_cols = [s for s in eval_steps]
    head = (["mode", "s/step (median)", "generate s/step", "samples/s", "gen tokens/s"]
            + [f"held-out acc @{s} (wall s)" for s in acc_cols]
            + ["start-up s", "busy cores (steps)", "other load (cores)", "peak RSS GB", "status"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        s = r.summary()
        if "median_step_s" not in s:
            lines.append("| " + " | ".join([r.mode] + ["–"] * (len(head) - 2) + [r.status]) + " |")
            continue
        accs = []
        for step in acc_cols:
            a = s["accuracy"].get(str(step))
            accs.append("–" if a is None else f"{100 * a['accuracy']:.1f}% ({fmt(a['wall_s'], '.0f')})")
        lines.append("| " + " | ".join(
            [r.mode, fmt(s["median_step_s"]), fmt(s["median_generate_s"]), fmt(s["samples_per_s"], ".0f"),
             fmt(s["gen_tokens_per_s"], ".0f")] + accs
            + [fmt(s["startup_s"], ".1f"), fmt(s["busy_cores"]), fmt(s["foreign_cores"], ".1f"), fmt(s["peak_rss_gb"]),
               r.status]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=("default", "genheavy", "both"), default="default")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--modes", default=",".join(ALL_MODES), help=f"comma-separated, from {','.join(ALL_MODES)}")
    p.add_argument("--eval-every", type=int, default=10, help="default workload: held-out accuracy every N steps")
    p.add_argument("--genheavy-eval-every", type=int, default=0,
                   help="generation-heavy workload: every N steps (0 = only at step 0 and the last step)")
    p.add_argument("--max-other-load", type=float, default=0.3,
                   help="a run during which other processes used more cores than this is measured again")
    p.add_argument("--contention-retries", type=int, default=1, help="how often (the least contended run is kept)")
    p.add_argument("--quiet-wait", type=float, default=300,
                   help="before each run, wait up to this many seconds for other processes to leave the cores")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is stopped")
    p.add_argument("--results", default=None, help="JSON with every figure (default: <run dir>/results.json)")
    p.add_argument("--run-dir", default=None, help="where logs and metrics go (default: bench/peers/runs/<time>)")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; valid: {', '.join(ALL_MODES)}")
    workloads = ["default", "genheavy"] if args.workload == "both" else [args.workload]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    run_root = Path(args.run_dir) if args.run_dir else HERE / "runs" / stamp
    run_root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": args.steps,
                              "eval_every": args.eval_every, "modes": modes, "cpus": os.cpu_count(),
                              "run_dir": str(run_root), "workloads": {}}
    if any(m.startswith("trl") for m in modes):
        report["trl_venv"] = ensure_trl_venv()
        print(f"TRL venv {TRL_VENV}: " + ", ".join(f"{k} {v}" for k, v in report["trl_venv"].items()), flush=True)
    tables = []
    for wl in workloads:
        spec = WORKLOADS[wl]
        print(f"\n== {wl}: {spec['title']}", flush=True)
        t0 = time.time()
        resolved = rlpipe_python(RESOLVE_MODEL, json.dumps(spec["model"]))
        model = resolved["path"]
        print(f"  model {model} (via {resolved['how']}; {time.time() - t0:.0f} s)", flush=True)
        every = args.eval_every if spec["eval"] == "every" else args.genheavy_eval_every
        every = every if every > 0 else args.steps  # both sides evaluate at step 0 and at the last step anyway
        eval_steps = sorted({0, *range(every, args.steps + 1, every), args.steps})
        results: dict[str, RunResult] = {}
        for mode in modes:
            attempts: list[RunResult] = []
            for attempt in range(1 + max(0, args.contention_retries)):
                wl_dir = run_root / wl / (f"retry{attempt}" if attempt else "")
                load = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                try:
                    if mode.startswith("trl"):
                        r = run_trl(mode, 1 if mode == "trl1" else 2, wl, model, args.steps, every, wl_dir,
                                    args.timeout)
                    else:
                        r = run_rlpipe(mode, spec["rlpipe"], args.steps, every, wl_dir, args.timeout)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - a broken mode must not stop the others
                    r = RunResult(mode=mode, status=f"failed: {type(e).__name__}: {e}"[:300])
                r.load_before = load
                attempts.append(r)
                contended = r.status == "ok" and (r.foreign_cores or 0.0) > args.max_other_load
                if not contended:
                    break
                print(f"  [{mode}] other processes used {r.foreign_cores:.2f} cores during its steps "
                      f"(> {args.max_other_load}): measured again", flush=True)
            ok = [a for a in attempts if a.status == "ok"]
            r = min(ok, key=lambda a: a.foreign_cores or 0.0) if ok else attempts[-1]
            r.extra["attempts"] = [{"status": a.status, "foreign_cores": a.foreign_cores, "log": a.log,
                                    "median_step_s": a.summary().get("median_step_s")} for a in attempts]
            results[mode] = r
            s = r.summary()
            print(f"  [{mode}] {r.status}; {s.get('steps', 0)} steps, median {fmt(s.get('median_step_s'))} s/step, "
                  f"wall {r.wall_s:.0f} s", flush=True)
        notes = fairness(wl, model, results, int(spec["trl"][1]))
        t = table(wl, list(results.values()), eval_steps)
        tables.append(f"### {wl}: {spec['title']}\n\n{t}\n\n" + "\n".join(f"- {n}" for n in notes))
        report["workloads"][wl] = {
            "title": spec["title"], "model": model, "eval_steps": eval_steps, "model_resolved_by": resolved["how"],
            "rlpipe_overrides": spec["rlpipe"], "trl_flags": spec["trl"], "fairness": notes,
            "runs": {m: {**r.summary(), "command": r.command, "log": r.log, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
                         "max_processes": r.max_processes, "per_step": r.steps, "evals": r.evals,
                         "meta": r.extra.get("meta"), "attempts": r.extra.get("attempts"),
                         "leftover_processes": r.extra.get("leftovers")}
                     for m, r in results.items()},
        }
    results_path = Path(args.results) if args.results else run_root / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n# TRL GRPOTrainer vs rlpipe, {report['date']}, {os.cpu_count()} CPUs, {args.steps} steps\n")
    print("\n\n".join(tables))
    print(f"\nAll figures: {results_path}")


if __name__ == "__main__":
    main()
