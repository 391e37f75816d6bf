"""Composing a config from the packaged presets: the Hydra entry every command uses, and the same composition for
code (tests, benches, examples) that builds a config without a command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

# The presets ship inside the package (rlpipe/conf), so a wheel runs from any directory.
CONFIG_SOURCE = "pkg://rlpipe.conf"
CONFIG_NAME = "config"


def load_config(overrides: Sequence[str] = (), *, config_dir: Optional[str | Path] = None,
                config_name: str = CONFIG_NAME, validate: bool = True):
    """The typed ``Config`` that ``rlpipe train [overrides]`` would run with.

    ``config_dir``/``config_name`` select a primary config outside the package (an example's YAML file); the
    packaged presets stay on the search path, so it can build on ``config`` and its groups.
    """
    from hydra import compose, initialize_config_dir, initialize_config_module
    from omegaconf import OmegaConf

    from rlpipe.config.schema import register_configs

    register_configs()
    if config_dir is None:
        context = initialize_config_module("rlpipe.conf", version_base="1.3")
        extra: list[str] = []
    else:
        context = initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3")
        extra = [f"hydra.searchpath=[{CONFIG_SOURCE}]"]
    with context:
        cfg = OmegaConf.to_object(compose(config_name, overrides=[*extra, *overrides]))
    if validate:
        from rlpipe.config.section import freeze
        from rlpipe.config.validate import validate as check

        check(cfg)
        freeze(cfg)
    return cfg


def hydra_command(prog: str, task: Callable[[Any, dict], Any],
                  extra_checks: Callable[[Any], list[str]] = lambda cfg: []) -> Callable[[], None]:
    """``main()`` for a command: Hydra composes the config from the packaged presets and the command line, it is
    validated (every problem listed, exit 2, before anything starts), then ``task(cfg, resolved_dict)`` runs.

    A ``UserError`` raised later (a bad file, a bad resume path) is printed as one line with exit status 2; a run
    aborted by a dead worker exits with 3. Neither prints a traceback.
    """
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from rlpipe.config.schema import register_configs

    register_configs()

    @hydra.main(config_path=CONFIG_SOURCE, config_name=CONFIG_NAME, version_base="1.3")
    def main(dcfg: DictConfig) -> None:
        from rlpipe.config.section import freeze
        from rlpipe.config.validate import validate
        from rlpipe.errors import ConfigError, RunAborted, UserError

        try:
            cfg = OmegaConf.to_object(dcfg)
            validate(cfg)
            errors = extra_checks(cfg)
            if errors:
                raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
            freeze(cfg)
            task(cfg, OmegaConf.to_container(dcfg, resolve=True))
        except UserError as e:
            print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except RunAborted as e:
            print(f"{prog}: run aborted: {e}", file=sys.stderr, flush=True)
            sys.exit(3)

    return main


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra < 1.1
    _HydraCallback = object


class CheckOutputDir(_HydraCallback):
    """A Hydra callback: Hydra creates ``hydra.run.dir`` (= ``trainer.output_dir``) before the command runs, so a
    path that cannot be a directory must be refused here, with one line and exit 2, not by Hydra's traceback."""

    def on_run_start(self, config, **kwargs) -> None:
        path = Path(str(config.hydra.run.dir))
        blocked = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            print(f"rlpipe: error: trainer.output_dir={path}: {blocked} is a file, not a directory", file=sys.stderr)
            sys.exit(2)
