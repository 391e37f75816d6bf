"""rlpipe: reinforcement learning from verifiable rewards on Ray, vLLM and FSDP2/DeepSpeed."""

__version__ = "0.1.0"
