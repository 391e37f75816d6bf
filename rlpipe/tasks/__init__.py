"""Synthetic tasks with exact answers (the default job's arithmetic)."""
