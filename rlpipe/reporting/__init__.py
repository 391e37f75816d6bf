"""Metric sinks (console, jsonl, wandb, tensorboard) and the end-of-run report."""
