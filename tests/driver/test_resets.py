import pytest
import torch

from conftest import free_port
from rlpipe.driver.resets import ResetPolicy
from rlpipe.learner.batch import build_batch
from rlpipe.learner.objective import GlobalCounts, ObjectiveSettings
from rlpipe.learner.worker import LearnerWorker, OptimizerSettings


def test_reset_causes():
    assert ResetPolicy(interval_steps=5).cause(4, {}) is None
    assert ResetPolicy(interval_steps=5).cause(5, {}) == "interval"
    assert ResetPolicy(kl_threshold=0.1).cause(1, {"actor/kl": 0.2}) == "kl_threshold"
    policy = ResetPolicy(plateau_evals=2)
    causes = [policy.cause(s, {"eval/accuracy": a}) for s, a in enumerate([0.5, 0.6, 0.6, 0.55])]
    assert causes == [None, None, None, "accuracy_plateau"]
    policy.record(3, "accuracy_plateau", 0.01)
    assert policy.history[0]["cause"] == "accuracy_plateau" and policy.evals_without_improvement == 0
    restored = ResetPolicy()
    restored.load_state_dict(policy.state_dict())
    assert restored == policy


@pytest.mark.component
@pytest.mark.parametrize("backend,options", [("fsdp2", {}), ("deepspeed", {"zero_stage": 2}),
                                             ("deepspeed", {"zero_stage": 3})], ids=["fsdp2", "zero2", "zero3"])
def test_reference_reset_makes_kl_zero_and_clears_the_optimizer(micro_model_dir, backend, options):
    worker = LearnerWorker(rank=0, world_size=1, master_addr="127.0.0.1", master_port=free_port(),
                           model_path=str(micro_model_dir), backend=backend, backend_options=options,
                           optimizer=OptimizerSettings(lr=1e-2, max_grad_norm=0.0),
                           objective=ObjectiveSettings(kl_coef=0.1), micro_batch_samples=8, with_reference=True, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = build_batch([[5, 6, 7]] * 6, [torch.randint(3, 60, (5,), generator=g).tolist() for _ in range(6)],
                        [[0.0] * 5] * 6, pad_id=0)

    def kl_now() -> float:
        lp = worker.compute_logprobs(batch)
        batch.old_logprobs, batch.ref_logprobs = lp["old_logprobs"], lp["ref_logprobs"]
        return float(((lp["ref_logprobs"] - lp["old_logprobs"]).abs() * batch.response_mask).max())

    assert kl_now() == 0.0  # the reference starts as a copy of the policy
    for _ in range(3):
        kl_now()
        batch.advantages = torch.randn(6, generator=g)
        metrics = worker.update([(batch, GlobalCounts.of(batch.response_mask, 1))])
    assert kl_now() > 1e-3 and metrics["actor/kl"] > 0
    assert worker.backend.optimizer_state_size() > 0
    result = worker.reset_reference(reset_optimizer=True)
    assert kl_now() == 0.0
    assert result["optimizer_state_tensors"] == 0 and worker.backend.optimizer_state_size() == 0
    batch.advantages = torch.randn(6, generator=g)
    metrics = worker.update([(batch, GlobalCounts.of(batch.response_mask, 1))])
    assert metrics["actor/kl"] == pytest.approx(0.0, abs=1e-6)  # measured right after the reset
    worker.shutdown()
