"""``rlpipe filter [hydra overrides]`` (also ``python -m rlpipe.filter``): the offline difficulty pre-pass.

Samples ``prepass.samples_per_prompt`` responses for every prompt of the training pool (``data.pool_size``) with the
policy (``model.*``) through the same rollout and verifier workers as training, and writes a pass-rate table
(jsonl; the first row records the model, the sampling settings and the pool). Training consumes it with
``data.pass_rate_table=PATH data.pass_rate_min=... data.pass_rate_max=...``, e.g. EXAONE's "drop prompts whose 8
samples were all correct" is ``data.pass_rate_max=0.99``.

    rlpipe filter data.pool_size=2048 prepass.samples_per_prompt=8 prepass.output=pass_rates.jsonl
"""

from __future__ import annotations

from rlpipe.process_env import set_process_defaults

set_process_defaults()  # before torch / ray / vllm are imported

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from rlpipe.config.compose import hydra_command  # noqa: E402
from rlpipe.config.schema import Config  # noqa: E402

log = logging.getLogger("rlpipe")


def pass_rate_table(cfg: Config) -> dict:
    from rlpipe.driver import build
    from rlpipe.driver.inputs import check_context_length, check_model_dir
    from rlpipe.driver.prompts import chat_length, chat_tokenizer, make_requests, prompt_pool
    from rlpipe.driver.session import Session
    from rlpipe.verify.types import VerdictKind

    start = time.time()
    model_path = check_model_dir(build.model_dir(cfg), "model.path")
    check_context_length(model_path, cfg)
    tokenize, tokenizer = chat_tokenizer(model_path, cfg.data.max_prompt_tokens)
    pool, _ = prompt_pool(cfg.data, chat_length(tokenizer))  # the pool training will draw from (held-out excluded)
    k = cfg.prepass.samples_per_prompt
    with Session(cfg, model_path) as session:
        requests = make_requests(pool, tokenize, k, cfg.trainer.seed, "prepass")
        completions = session.rollout.generate(requests, build.sampling_settings(cfg))
        by_uid = {p.uid: p for p in pool}
        verdicts, counts = session.verifiers.score([(c.scorable_text, by_uid[c.request_id].gold) for c in completions])
    correct, scored = Counter(), Counter()
    for c, v in zip(completions, verdicts):
        if v is not None:  # infrastructure failures are not evidence about difficulty
            scored[c.request_id] += 1
            correct[c.request_id] += v.kind == VerdictKind.CORRECT
    meta = {"model_path": model_path, "samples_per_prompt": k, "sampling": vars(build.sampling_settings(cfg)),
            "data": {"task": cfg.data.task, "file": cfg.data.file, "seed": cfg.data.seed,
                     "pool_size": cfg.data.pool_size},
            "verifier": cfg.verifier.name, "dropped_samples": counts["dropped"], "seconds": round(time.time() - start, 1)}
    out = Path(cfg.prepass.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"_meta": meta}) + "\n")
        for p in pool:
            n = scored[p.uid]
            rate = correct[p.uid] / n if n else None
            f.write(json.dumps({"uid": p.uid, "prompt": p.messages[-1]["content"], "num_samples": n,
                                "num_correct": correct[p.uid], "pass_rate": rate}) + "\n")
    rates = [correct[p.uid] / scored[p.uid] for p in pool if scored[p.uid]]
    histogram = Counter(round(r, 3) for r in rates)
    summary = {"prompts": len(pool), "never_solved": histogram.get(0.0, 0), "always_solved": histogram.get(1.0, 0),
               "mean_pass_rate": sum(rates) / max(1, len(rates)), "output": str(out.resolve()), **meta}
    print(f"pass-rate table: {out} ({len(pool)} prompts x {k} samples, mean pass rate "
          f"{summary['mean_pass_rate']:.3f}, never solved {summary['never_solved']}, always solved "
          f"{summary['always_solved']}, {meta['seconds']:.0f} s)")
    return summary


def prepass_checks(cfg: Config) -> list[str]:
    fixed_pool = cfg.data.pool_size > 0 or cfg.data.task == "file"
    return [] if fixed_pool else ["the pre-pass scores a fixed pool: set data.pool_size > 0 (or use a data file)"]


main = hydra_command("rlpipe filter", lambda cfg, resolved: pass_rate_table(cfg), prepass_checks)

if __name__ == "__main__":
    main()
