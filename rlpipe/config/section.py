"""The base of every config section and the field helper that carries help text; the sections themselves are in
``schema.py`` (the run's) and ``schema_stages.py`` (the stages around RL)."""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any

from omegaconf import MISSING


class Section:
    """Base of every config section: assignable while Hydra builds it, read-only once ``freeze`` ran (after
    validation), so no code changes the config a run was validated with."""

    _frozen = False

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"the config is frozen after validation: {type(self).__name__}.{name} cannot be "
                                 f"set; pass a different value as an override, or build the settings you need")
        object.__setattr__(self, name, value)


def freeze(section: Section) -> Section:
    """Make ``section`` and every section inside it read-only; returns it."""
    for f in fields(section):
        value = getattr(section, f.name)
        if isinstance(value, Section):
            freeze(value)
    object.__setattr__(section, "_frozen", True)
    return section


def _help(text: str, default: Any = MISSING, **kwargs: Any) -> Any:
    """A dataclass field whose help text travels in its metadata (printed by ``rlpipe.config.describe``)."""
    if default is MISSING and "default_factory" not in kwargs:
        return field(metadata={"help": text}, **kwargs)
    if "default_factory" in kwargs:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text})
