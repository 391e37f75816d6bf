"""Dead workers. A rollout or verifier actor SIGKILLed in the middle of a step is restarted and its share re-queued:
the step's ledger holds every sample exactly once, and the restarted engine serves the current weights. A learner
rank SIGKILLed mid-run ends the run quickly with a message naming the rank, and a resumed run completes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import REPO, TOOL_MICRO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("default_model")]
PROMPTS, SAMPLES = 4, 4


def _kill_on_submit(group, method: str):
    """Make the next ``method`` call submitted to worker 0 of ``group`` lose its worker: SIGKILL it right after."""
    pid = group.pids()[0]  # asked now, while the worker is idle (a call queues behind a running one)
    original = group.submit_to
    fired = []

    def submit_to(index, m, *args, **kwargs):
        handle = original(index, m, *args, **kwargs)
        if m == method and index == 0 and not fired:
            os.kill(pid, signal.SIGKILL)
            fired.append(pid)
        return handle

    group.submit_to = submit_to
    return fired


def _assert_ledger_exact(trainer):
    """Every prompt of the step has its samples 0..SAMPLES-1, each exactly once."""
    ids = Counter(trainer.last_ledger)
    assert all(n == 1 for n in ids.values()), f"duplicated samples: {[k for k, n in ids.items() if n > 1]}"
    per_prompt = Counter(k.rsplit("#", 1)[0] for k in ids)
    assert len(per_prompt) == PROMPTS and set(per_prompt.values()) == {SAMPLES}, per_prompt
    assert {int(k.rsplit("#", 1)[1]) for k in ids} == set(range(SAMPLES))


def test_killed_rollout_and_verifier_actors_are_restarted_and_no_sample_is_lost(micro_model_dir):
    import ray

    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import LearnerSpec, Session

    cfg = load_config([
        f"model.path={micro_model_dir}", f"data.prompts_per_step={PROMPTS}", f"rollout.samples_per_prompt={SAMPLES}",
        "rollout.max_response_tokens=24", "learner.lr=1e-2", "verifier.num_workers=2"])
    model = str(micro_model_dir)
    tokenize, prompts, _ = load_prompts(cfg, model)
    with Session(cfg, model, learner=LearnerSpec.of(cfg, model)) as session:
        trainer = session.trainer(prompts, tokenize)
        trainer.step(1)  # a large learning rate: after this push, an engine with the initial weights would differ
        killed = _kill_on_submit(session.rollout.group, "generate")
        m2 = trainer.step(2)
        assert killed and session.rollout.group.pids()[0] != killed[0], "the rollout actor was not replaced"
        assert m2["faults/rollout_restarts"] == 1 and m2["faults/rollout_requeued"] == PROMPTS
        _assert_ledger_exact(trainer)
        # The restarted engine got the step-1 weights before regenerating: its logprobs match the learner's.
        assert m2["rollout/logprob_diff_max"] < 1e-3, m2["rollout/logprob_diff_max"]

        killed = _kill_on_submit(session.verifiers.group, "score_batch")
        m3 = trainer.step(3)
        assert killed and m3["faults/verifier_restarts"] == 1
        assert m3["verify/dropped"] == 0 and m3["rollout/num_samples"] == PROMPTS * SAMPLES
        _assert_ledger_exact(trainer)

        # An engine that dies while it loads new weights (pushed at the end of step 4, not waited for) is found dead
        # at step 5's generation, restarted once and given the current weights: step 5's samples come from them.
        killed = _kill_on_submit(session.rollout.group, "load_weights")
        trainer.step(4)
        m5 = trainer.step(5)
        assert killed and session.rollout.group.pids()[0] != killed[0], "the rollout actor was not replaced"
        assert m5["faults/rollout_restarts"] == 1
        assert m5["rollout/logprob_diff_max"] < 1e-3, m5["rollout/logprob_diff_max"]
        _assert_ledger_exact(trainer)
        assert ray.is_initialized()
    assert not ray.is_initialized()  # the session shut down the Ray instance it started


def test_asynchronous_rounds_in_flight_survive_a_killed_engine(micro_model_dir):
    """k = 1: the engine is killed right after the next step's round is submitted to it (in flight while this step
    trains); the round is re-run on the restarted engine and every step still trains each sample exactly once."""
    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import LearnerSpec, Session

    cfg = load_config([
        f"model.path={micro_model_dir}", f"data.prompts_per_step={PROMPTS}", f"rollout.samples_per_prompt={SAMPLES}",
        "rollout.max_response_tokens=24", "learner.lr=1e-2", "trainer.max_staleness_steps=1",
        "algorithm.rollout_correction=tis"])
    model = str(micro_model_dir)
    tokenize, prompts, _ = load_prompts(cfg, model)
    with Session(cfg, model, learner=LearnerSpec.of(cfg, model)) as session:
        trainer = session.trainer(prompts, tokenize)
        trainer.step(1)  # steps 1 and 2 in flight at its start
        killed = _kill_on_submit(session.rollout.group, "generate")  # hits step 3's round, submitted in step 2
        faults = Counter()
        for step in (2, 3, 4):
            m = trainer.step(step)
            faults.update({k: v for k, v in m.items() if k.startswith("faults/")})
            _assert_ledger_exact(trainer)
            assert m["async/dropped_stale"] == 0 and m["async/staleness_mean"] <= 1
        # One death, one restart; the rounds lost with it (step 3's, and step 2's too if the engine had not finished
        # it yet: timing decides) were re-run whole.
        assert killed and faults["faults/rollout_restarts"] == 1
        assert faults["faults/rollout_requeued"] in (PROMPTS, 2 * PROMPTS), faults


def test_an_engine_killed_during_multi_turn_rollouts_loses_nothing(tool_micro_model):
    """Multi-turn rollouts (a rollout is one generate call of the actor, all its turns): the engine dies inside the
    call, the restarted one re-runs the whole share, each trajectory from its first turn, and the step trains every
    sample once, with several turns."""
    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import LearnerSpec, Session

    cfg = load_config([*TOOL_MICRO, f"data.prompts_per_step={PROMPTS}", f"rollout.samples_per_prompt={SAMPLES}",
                       "learner.lr=1e-2"])
    model = str(tool_micro_model)
    tokenize, prompts, _ = load_prompts(cfg, model)
    with Session(cfg, model, learner=LearnerSpec.of(cfg, model)) as session:
        trainer = session.trainer(prompts, tokenize)
        trainer.step(1)
        killed = _kill_on_submit(session.rollout.group, "generate")
        m2 = trainer.step(2)
        assert killed and m2["faults/rollout_restarts"] == 1 and m2["faults/rollout_requeued"] == PROMPTS
        _assert_ledger_exact(trainer)
        assert m2["rollout/turns_mean"] > 1.1 and m2["rollout/tool_infra_dropped"] == 0
        assert m2["rollout/logprob_diff_max"] < 1e-3, m2["rollout/logprob_diff_max"]


COMMON = ["data.pool_size=16", "data.prompts_per_step=8", "data.heldout_size=32", "trainer.eval_every_steps=100",
          "trainer.save_every_steps=2", "logger.progress_bar=false", "trainer.total_steps=5"]


def test_killed_learner_rank_aborts_with_a_clear_message_then_resume_completes(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpipe.train", f"trainer.output_dir={run_dir}", *COMMON]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 900
        while not (run_dir / "checkpoints" / "step_000002" / "manifest.json").exists():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        pids = re.search(r"learner ranks \[(\d+), (\d+)\]", log_path.read_text())
        assert pids, log_path.read_text()[-3000:]
        os.kill(int(pids[2]), signal.SIGKILL)
        killed_at = time.time()
        rc = proc.wait(timeout=180)
        took = time.time() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log_path.read_text()
    assert rc == 3, out[-3000:]
    assert "learner worker 1 died" in out and "trainer.resume=auto" in out, out[-3000:]
    assert took < 120, f"the run took {took:.0f} s to notice the dead rank"

    resumed = subprocess.run([*cmd, "trainer.resume=auto"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["resumed_from_step"] >= 2
    steps = [json.loads(line)["step"] for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5], steps  # rows of the crashed run after its checkpoint were dropped, not doubled
