"""The learner: N ranks of one torch.distributed group holding the policy (and the frozen reference)."""
