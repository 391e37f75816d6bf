import pytest
import torch

from conftest import free_port
from rlpipe.driver.resets import ResetPolicy
from support import counts, learner_rank, shard


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
    worker = learner_rank(micro_model_dir, free_port(), backend=backend, backend_options=options, lr=1e-2,
                          kl_coef=0.1)
    g = torch.Generator().manual_seed(0)
    prompts, responses = [[5, 6, 7]] * 6, [torch.randint(3, 60, (5,), generator=g).tolist() for _ in range(6)]
    samples = shard(prompts, responses)

    def kl_now() -> float:
        """Max over samples of Σ_t k3(policy, reference), from the samples' preparation for an update."""
        return float(worker.prepare(samples)["kl_sum"].abs().max())

    assert kl_now() == 0.0  # the reference starts as a copy of the policy
    for _ in range(3):
        kl_now()
        metrics = worker.update(torch.randn(6, generator=g), [counts(responses, 1)])
    assert kl_now() > 1e-3 and metrics["actor/kl"] > 0
    assert worker.backend.optimizer_state_size() > 0
    result = worker.reset_reference(reset_optimizer=True)
    assert kl_now() == 0.0
    assert result["optimizer_state_tensors"] == 0 and worker.backend.optimizer_state_size() == 0
    metrics = worker.update(torch.randn(6, generator=g), [counts(responses, 1)])
    assert metrics["actor/kl"] == pytest.approx(0.0, abs=1e-6)  # measured right after the reset
    worker.shutdown()
