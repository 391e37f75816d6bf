"""The run's file inputs, checked before any actor starts: the model directory, the prompts and the held-out set.
Problems are ``UserError``s naming the field or file (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rlpipe.config.schema import Config
from rlpipe.errors import UserError


def check_context_length(model_path: str, cfg: Config, max_response_tokens: Optional[int] = None) -> None:
    """The engines hold prompt + response in the model's context: refuse a config that cannot fit, naming fields."""
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    response = max_response_tokens or cfg.rollout.max_response_tokens
    if limit is not None and cfg.data.max_prompt_tokens + response > limit:
        raise UserError(f"data.max_prompt_tokens ({cfg.data.max_prompt_tokens}) + rollout.max_response_tokens "
                        f"({response}) is more than the {limit} positions of the model at {model_path}")


def check_model_dir(path: str, field: str) -> str:
    """``path`` if it is a Hugging Face model directory with a config and a tokenizer, else a UserError naming
    ``field``. (Nothing is downloaded: a hub id is not a directory here.)"""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{field}={path}: no such directory (a Hugging Face model directory with config.json, "
                        f"the weights and the tokenizer; models are not downloaded)")
    missing = [name for name in ("config.json",) if not (p / name).is_file()]
    if not any((p / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        missing.append("tokenizer files")
    if missing:
        raise UserError(f"{field}={path}: not a Hugging Face model directory (missing {', '.join(missing)})")
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise UserError(f"{field}={path}: config.json cannot be read ({str(e).splitlines()[0][:200]})") from None
    return str(p)


def load_prompts(cfg: Config, model_path: str, quarantine: Optional[str] = None):
    """(tokenize, training prompt source, held-out items). A fixed pool must hold at least one step's prompts: a
    step never trains a prompt twice."""
    from rlpipe.driver.prompts import build_prompts, chat_length, chat_tokenizer

    tokenize, tokenizer = chat_tokenizer(model_path, cfg.data.max_prompt_tokens)
    prompts, heldout = build_prompts(cfg.data, chat_length(tokenizer), quarantine=quarantine)
    pool = getattr(prompts, "items", None)
    if pool is not None and len(pool) < cfg.data.prompts_per_step:
        raise UserError(f"data.prompts_per_step={cfg.data.prompts_per_step} is more than the {len(pool)} prompts of "
                        f"the training pool: a step never holds one prompt twice; lower it or use a larger pool")
    return tokenize, prompts, heldout
