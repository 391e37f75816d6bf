"""``rlpipe prefer``: preference optimisation (DPO, IPO, SimPO, SimPER) on the learner ranks, from a pair file or from
pairs built online out of the policy's own scored rollouts.

    offline:  pairs = the next prefer.pairs_per_step pairs of a shuffled pool of file pairs
    online:   prompts = the next prefer.prompts_per_step prompts of the data section
              k responses each from the rollout engines (current policy), scored by the verifiers
              pairs = per prompt: chosen = the shortest correct, rejected = a wrong / much longer correct one
              (a prompt with no such pair is counted and skipped; unscored samples are left out, never "wrong")
    update:   one optimizer step on the mean pair loss (rlpipe.algos.preference), the frozen reference for DPO / IPO
    online:   the new weights go to the engines, so the next step's pairs come from the updated policy (online DPO)

Held-out: the pair loss and preference accuracy on held-out pairs (offline), greedy accuracy and mean response
length on the data section's held-out problems (the concision stage's two numbers).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from rlpipe.algos.preference import REFERENCE_FREE
from rlpipe.algos.schedule import warmup_cosine_lr
from rlpipe.config.schema import Config
from rlpipe.driver import build
from rlpipe.driver.inputs import check_model_dir, load_prompts
from rlpipe.driver.prompts import ShuffledPool, make_requests
from rlpipe.driver.session import LearnerSpec, Session
from rlpipe.driver.stage_loop import accuracy_eval, run_stage_command
from rlpipe.errors import UserError
from rlpipe.learner.stages import PreferenceSettings
from rlpipe.tasks.preference_pairs import PreferencePair, load_pairs, pair_from_group
from rlpipe.verify.types import VerdictKind

log = logging.getLogger("rlpipe")


class PreferenceStage:
    name = "prefer"
    headline = {"loss": "prefer/loss", "acc": "eval/accuracy", "len": "eval/response_len"}

    def __init__(self, cfg: Config, session: Session, model_path: str,
                 files: Optional[tuple[list[PreferencePair], list[PreferencePair]]]):
        p = self.p = cfg.prefer
        self.cfg, self.session = cfg, session
        self.total_steps, self.eval_every_steps = p.total_steps, p.eval_every_steps
        self.settings = PreferenceSettings(p.loss, p.beta, p.label_smoothing, p.simpo_gamma)
        self.tokenize, self.prompts, heldout_problems = load_prompts(cfg, model_path)
        self.accuracy = accuracy_eval(cfg, session, (self.tokenize, heldout_problems) if p.eval_accuracy else None)
        pairs, self.heldout = files if files is not None else ([], [])
        self.pool = ShuffledPool(pairs, cfg.trainer.seed) if files is not None else None  # None: online pairs

    def step(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        if self.pool is not None:
            pairs = self.pool.next_batch(self.p.pairs_per_step)
        else:
            pairs, counts = self._online_pairs(step)
            metrics.update({f"prefer/{k}": float(v) for k, v in counts.items()})
            metrics["timing/generate"] = time.perf_counter() - start
        metrics["prefer/pairs"] = float(len(pairs))
        if not pairs:  # no prompt gave a usable pair: nothing to train this step (counted above)
            log.warning("prefer step %d: no usable pair; step skipped", step)
            return metrics
        lr = warmup_cosine_lr(step - 1, self.p.total_steps, self.p.lr, self.p.warmup_ratio, self.p.min_lr_ratio)
        start = time.perf_counter()
        metrics.update(self.session.learner.preference_update(pairs, lr, self.settings))
        metrics.update({"actor/lr": lr, "timing/update": time.perf_counter() - start,
                        "prefer/chosen_len": sum(len(x.chosen_ids) for x in pairs) / len(pairs),
                        "prefer/rejected_len": sum(len(x.rejected_ids) for x in pairs) / len(pairs)})
        if self.pool is None:  # the next pairs come from the updated policy
            start = time.perf_counter()
            self.session.rollout.push_weights(self.session.learner.export_weights(), version=step)
            metrics["timing/sync_weights"] = time.perf_counter() - start
        return metrics

    def _online_pairs(self, step: int) -> tuple[list[PreferencePair], Counter]:
        p, session = self.p, self.session
        prompts = self.prompts.next_batch(p.prompts_per_step)
        requests = make_requests(prompts, self.tokenize, p.samples_per_prompt, self.cfg.trainer.seed, "prefer", step)
        completions = session.rollout.generate(requests, build.sampling_settings(self.cfg))
        gold = {item.uid: item.gold for item in prompts}
        verdicts, verify_counts = session.verifiers.score([(c.text, gold[c.request_id]) for c in completions])
        groups: dict[str, list] = {r.request_id: [] for r in requests}
        for c, v in zip(completions, verdicts):
            if v is not None:  # an unscored sample (timeout, error) is left out, never counted as wrong
                groups[c.request_id].append((c.response_ids, v.kind == VerdictKind.CORRECT))
        counts: Counter = Counter(unscored=verify_counts["dropped"], groups=len(requests))
        pairs = []
        for r in requests:
            samples = groups[r.request_id]
            pair, why = pair_from_group(r.request_id, r.prompt_ids, [ids for ids, _ in samples],
                                        [ok for _, ok in samples], p.rejected, p.min_length_ratio)
            counts[why] += 1  # groups without a pair: no_correct + no_rejected
            if pair is not None:
                pairs.append(pair)
        return pairs, counts

    def evaluate(self, step: int) -> dict[str, float]:
        metrics = {}
        if self.heldout:
            metrics.update({f"eval/{k.removeprefix('prefer/')}": v for k, v in
                            self.session.learner.preference_loss(self.heldout, self.settings).items()})
        metrics.update(self.accuracy(step))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.state_dict() if self.pool is not None else None,
                "prompts": self.prompts.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.pool is not None:
            self.pool.load_state_dict(state["pool"])
        self.prompts.load_state_dict(state["prompts"])


def pair_files(cfg: Config, model_path: str, run_dir: Path) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training pairs, held-out pairs) from ``prefer.train_file`` / ``prefer.heldout_file`` (or split off)."""
    from transformers import AutoTokenizer

    p = cfg.prefer
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    options = dict(max_tokens=p.max_seq_tokens, on_bad_row=cfg.data.on_bad_row,
                   quarantine=cfg.data.quarantine_file or run_dir / "quarantine.jsonl")
    pairs, _ = load_pairs(p.train_file, tokenizer, **options)
    if p.heldout_file:
        heldout, _ = load_pairs(p.heldout_file, tokenizer, **options)
    else:
        cut = max(0, min(p.heldout_rows, len(pairs) - p.pairs_per_step))  # what is left must fill one step
        heldout, pairs = pairs[:cut], pairs[cut:]
    log.info("prefer: %d training pairs, %d held out (%s)", len(pairs), len(heldout), p.train_file)
    return pairs, heldout


def run_prefer(cfg: Config, resolved_config: dict[str, Any]) -> dict[str, Any]:
    if cfg.rollout.environment is not None and not cfg.prefer.train_file:
        # Pairs of the model's own samples would train the tool's tokens too: pairs carry no token mask yet.
        raise UserError(f"rlpipe prefer builds pairs from one-turn samples only; rollout.environment="
                        f"{cfg.rollout.environment} (multi-turn rollouts) is not supported here yet")
    model_path = check_model_dir(build.model_dir(cfg), "model.path")
    p = cfg.prefer
    # A pair file is read and checked before any actor starts: a bad row fails in seconds.
    files = pair_files(cfg, model_path, Path(cfg.trainer.output_dir).resolve()) if p.train_file else None
    learner = LearnerSpec(cfg.learner.num_workers, with_reference=not REFERENCE_FREE[p.loss])
    return run_stage_command(cfg, resolved_config, model_path, learner,
                             with_engines=files is None or p.eval_accuracy,
                             make_stage=lambda session, _: PreferenceStage(cfg, session, model_path, files))
