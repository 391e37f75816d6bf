"""``rlpipe pipeline``: stages chained in one command, each starting from the model the one before exported.

    <trainer.output_dir>/1-sft/      an `rlpipe sft` run directory (checkpoints, metrics, final_model)
    <trainer.output_dir>/2-rl/       an `rlpipe train` run directory, model.path = 1-sft/final_model
    <trainer.output_dir>/3-prefer/   an `rlpipe prefer` run directory, model.path = 2-rl/final_model
    <trainer.output_dir>/pipeline.json   accuracy and mean response tokens on the held-out problems after each stage

Every stage gets the whole config (its own section: ``sft.*``, ``prefer.*``, or the RL stage's ``algorithm.*`` /
``trainer.total_steps``) with ``model.path`` and the run location set. A stage is finished once its summary and
exported model exist; a rerun of the same command skips finished stages and resumes the unfinished one from its
last checkpoint (``trainer.resume=auto``), so a pipeline killed in its second stage never redoes its first.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable

from rlpipe.config.schema import Config
from rlpipe.errors import UserError

log = logging.getLogger("rlpipe")


def _runners() -> dict[str, Callable[[Config, dict], dict]]:
    from rlpipe.driver.preference import run_prefer
    from rlpipe.driver.run import run
    from rlpipe.driver.supervised import run_sft

    return {"sft": run_sft, "rl": lambda cfg, resolved: run(cfg, resolved_config=resolved), "prefer": run_prefer}


def stage_config(resolved: dict[str, Any], model_path: str | None, stage_dir: Path) -> tuple[Config, dict]:
    """The typed, validated, frozen config of one stage: the pipeline's, with the model and run location set."""
    from omegaconf import OmegaConf

    from rlpipe.config.section import freeze
    from rlpipe.config.validate import validate

    stage = copy.deepcopy(resolved)
    stage["trainer"].update(output_dir=str(stage_dir), checkpoint_dir=str(stage_dir / "checkpoints"))
    if model_path is not None:
        stage["model"]["path"] = model_path
    node = OmegaConf.merge(OmegaConf.structured(Config), stage)
    cfg = OmegaConf.to_object(node)
    validate(cfg)
    return freeze(cfg), stage


def finished(stage_dir: Path) -> bool:
    return (stage_dir / "summary.json").is_file() and (stage_dir / "final_model" / "config.json").is_file()


OTHER_STAGES = {"sft": ("prefer", "pipeline"), "prefer": ("sft", "pipeline"), "rl": ("sft", "prefer", "pipeline")}


def changed_settings(stage_dir: Path, stage: dict[str, Any], name: str) -> list[str]:
    """The settings (dotted keys) a finished stage ran with that differ from ``stage``'s, other stages' sections and
    the run location left out."""
    recorded = json.loads((stage_dir / "config.json").read_text())
    skip = set(OTHER_STAGES[name]) | {"logger"}
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not key and k in skip or key == "trainer" and k in ("output_dir", "checkpoint_dir", "resume"):
                    continue
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k)
        elif a != b:
            out.append(key)

    walk(recorded, stage, "")
    return out


def run_pipeline(cfg: Config, resolved: dict[str, Any]) -> list[dict[str, Any]]:
    if cfg.model.lora.rank > 0 and not cfg.model.lora.export_merged:
        raise UserError("model.lora in a pipeline: each stage starts from the model the one before exported, so set "
                        "model.lora.export_merged=true (an adapter directory alone is not a model to start from)")
    runners = _runners()
    root = Path(cfg.trainer.output_dir).resolve()
    model_path = cfg.model.path
    rows = []
    for k, name in enumerate(cfg.pipeline.stages, 1):
        stage_dir = root / f"{k}-{name}"
        if finished(stage_dir):
            log.info("pipeline: stage %d (%s) already finished in %s; skipped", k, name, stage_dir)
            changed = changed_settings(stage_dir, stage_config(resolved, model_path, stage_dir)[1], name)
            if changed:
                log.warning("pipeline: stage %d (%s) finished with other settings than this command's (%s); its "
                            "result is kept — delete %s to run it again", k, name, ", ".join(changed[:8]), stage_dir)
        else:
            log.info("pipeline: stage %d of %d (%s) in %s, from %s", k, len(cfg.pipeline.stages), name, stage_dir,
                     model_path or "the default start")
            stage_cfg, stage_resolved = stage_config(resolved, model_path, stage_dir)
            runners[name](stage_cfg, stage_resolved)
        rows.append(_stage_row(k, name, stage_dir))
        model_path = str(stage_dir / "final_model")
    (root / "pipeline.json").write_text(json.dumps({"stages": rows, "final_model": model_path}, indent=2) + "\n")
    print(format_table(rows), flush=True)
    return rows


def _stage_row(k: int, name: str, stage_dir: Path) -> dict[str, Any]:
    summary = json.loads((stage_dir / "summary.json").read_text())
    evals = [r for r in (json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()
                         if line.strip()) if "eval/accuracy" in r]
    return {"stage": f"{k}-{name}", "dir": str(stage_dir), "steps": summary["steps"],
            "accuracy_before": evals[0]["eval/accuracy"] if evals else None,
            "accuracy_after": evals[-1]["eval/accuracy"] if evals else None,
            "response_tokens_before": evals[0].get("eval/response_len") if evals else None,
            "response_tokens_after": evals[-1].get("eval/response_len") if evals else None}


def format_table(rows: list[dict[str, Any]]) -> str:
    def pct(x):
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    def tokens(x):
        return "   n/a" if x is None else f"{x:6.1f}"

    lines = ["", "rlpipe pipeline: held-out accuracy and mean response tokens after each stage",
             f"  {'stage':<12} {'steps':>6} {'accuracy':>9} {'tokens':>7}"]
    if rows:
        lines.append(f"  {'(start)':<12} {'':>6} {pct(rows[0]['accuracy_before']):>9} "
                     f"{tokens(rows[0]['response_tokens_before']):>7}")
    lines += [f"  {r['stage']:<12} {r['steps']:>6} {pct(r['accuracy_after']):>9} {tokens(r['response_tokens_after']):>7}"
              for r in rows]
    return "\n".join(lines)
