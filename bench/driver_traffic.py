"""Bytes the driver sends to and receives from its Ray actors per RL step, and the step time, before and after the
learner batch stopped crossing the Ray boundary three times per step — measured in one run, interleaved.

    .venv/bin/python bench/driver_traffic.py [--before REV] [--steps 8] [--rounds 2]

"before" is a git revision checked out into a temporary worktree (default: 3993f87, the last commit with the old
road); "after" is this checkout. Each round runs the default job (tiny warm-started model, 32 prompts x 8 samples,
Ray actors: one vLLM engine, one verifier, two FSDP2 ranks) for a warm-up step and ``--steps`` measured steps, once
per version, in separate processes. Every actor call the driver makes is counted: the pickled size of its arguments
(sent) and of every result the driver fetches (received), out-of-band buffers included; an ObjectRef passed on (the
exported weights go learner -> engines that way) counts only as the reference. Prints medians per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Traffic:
    """Counts the bytes of actor-call arguments and of fetched results (Ray's serializer: pickle protocol 5)."""

    def __init__(self):
        self.sent = self.received = 0
        self.by_call: dict[str, list[int]] = {}  # role method -> [bytes sent, bytes received]
        self._method_of: dict = {}

    @staticmethod
    def size(value) -> int:
        from ray import cloudpickle

        buffers = []
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        return len(data) + sum(memoryview(b).nbytes for b in buffers)

    def install(self) -> None:
        import ray
        from ray.actor import ActorMethod

        remote, get = ActorMethod._remote, ray.get

        def counted_remote(method, args=None, kwargs=None, **options):
            size = self.size((args or (), kwargs or {}))
            self.sent += size
            # RoleActor.call(method_name, ...): name the role's method
            name = args[0] if method._method_name == "call" and args else method._method_name
            self.by_call.setdefault(name, [0, 0])[0] += size
            ref = remote(method, args=args, kwargs=kwargs, **options)
            self._method_of[ref] = name
            return ref

        def counted_get(refs, *a, **kw):
            values = get(refs, *a, **kw)
            size = self.size(values)
            self.received += size
            for ref in refs if isinstance(refs, list) else [refs]:
                name = self._method_of.get(ref, "?")
                self.by_call.setdefault(name, [0, 0])[1] += size // (len(refs) if isinstance(refs, list) else 1)
            return values

        ActorMethod._remote = counted_remote
        ray.get = counted_get


def child(steps: int) -> dict:
    """Runs inside the version under test (its rlpipe first on sys.path); prints a JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    traffic = Traffic()
    per_step = []
    try:  # this checkout's API
        from rlpipe.config.compose import load_config
        from rlpipe.driver import build
        from rlpipe.driver.inputs import load_prompts
        from rlpipe.driver.session import LearnerSpec, Session

        cfg = load_config([])
        model_path = build.model_dir(cfg)
        tokenize, prompts, _ = load_prompts(cfg, model_path)
        session = Session(cfg, model_path, learner=LearnerSpec.of(cfg, model_path))
        session.__enter__()
        trainer = session.trainer(prompts, tokenize)
        close = session.close
    except ImportError:  # the old API (before the Session builder)
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        from rlpipe.config.schema import register_configs
        from rlpipe.driver import build, cluster
        from rlpipe.driver.prompts import build_prompts, chat_tokenizer
        from rlpipe.driver.run import make_trainer

        register_configs()
        import rlpipe

        with initialize_config_dir(config_dir=str(Path(rlpipe.__file__).parents[1] / "conf"), version_base="1.3"):
            cfg = OmegaConf.to_object(compose("config"))
        model_path = build.model_dir(cfg)
        tokenize, tokenizer = chat_tokenizer(model_path, cfg.data.max_prompt_tokens)
        prompts, _ = build_prompts(cfg.data)
        ray_ctx = cluster.ray_session(None, build.actors_needed(cfg))
        ray_ctx.__enter__()
        roles = build.build_roles(cfg, model_path, cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens)
        trainer = make_trainer(cfg, roles, prompts, tokenize, tokenizer)

        def close():
            roles.shutdown()
            ray_ctx.__exit__(None, None, None)

    traffic.install()
    by_call = {}
    for step in range(steps + 1):
        sent, received, start = traffic.sent, traffic.received, time.perf_counter()
        if step == steps:
            traffic.by_call.clear()
        trainer.step(step + 1)
        if step == steps:
            by_call = dict(traffic.by_call)
        if step:  # step 0 warms up (vLLM's first call, allocators)
            per_step.append({"sent": traffic.sent - sent, "received": traffic.received - received,
                             "seconds": time.perf_counter() - start})
    close()
    return {"sent": statistics.median(s["sent"] for s in per_step),
            "received": statistics.median(s["received"] for s in per_step),
            "seconds": statistics.median(s["seconds"] for s in per_step), "steps": len(per_step),
            "last_step_by_call": by_call}


def run_version(code: Path, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], cwd=code, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{code}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="3993f87")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, os.environ["PYTHONPATH"])
        print(json.dumps(child(args.steps)), flush=True)
        return
    worktree = Path(tempfile.mkdtemp(prefix="rlpipe-before-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.before], check=True,
                   capture_output=True)
    results: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for _ in range(args.rounds):
            for name, code in (("before", worktree), ("after", REPO)):
                results[name].append(run_version(code, args.steps))
                print(f"  {name}: {results[name][-1]}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("sent", "received", "seconds")}
           for name, rs in results.items()}
    b, a = med["before"], med["after"]
    print(f"\ndriver traffic per step (default job, median of {args.rounds} x {args.steps} steps; before = "
          f"{args.before}, after = this checkout)")
    print(f"  {'':<8} {'sent':>12} {'received':>12} {'total':>12} {'s/step':>8}")
    for name, m in (("before", b), ("after", a)):
        print(f"  {name:<8} {m['sent']:>12,.0f} {m['received']:>12,.0f} {m['sent'] + m['received']:>12,.0f} "
              f"{m['seconds']:>8.2f}")
    for name, rs in results.items():
        calls = rs[-1]["last_step_by_call"]
        print(f"  {name}, last step by call (sent / received): " +
              ", ".join(f"{k} {v[0]:,}/{v[1]:,}" for k, v in sorted(calls.items(), key=lambda kv: -sum(kv[1]))))
    print(f"  total bytes {(b['sent'] + b['received']) / (a['sent'] + a['received']):.1f}x smaller; step time "
          f"{a['seconds'] / b['seconds']:.2f}x of before")


if __name__ == "__main__":
    main()
