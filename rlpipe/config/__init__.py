"""Configuration: dataclasses registered in Hydra's ConfigStore (the single source of truth) and validation."""

from rlpipe.config.schema import Config, register_configs

__all__ = ["Config", "register_configs"]
