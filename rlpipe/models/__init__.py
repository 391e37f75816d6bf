"""The tiny offline model of the default job: tokenizer, Qwen2 architecture, cached warm-start."""
