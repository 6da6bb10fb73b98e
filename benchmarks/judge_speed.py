"""Judged answers per second of `LocalJudge` (the bundled model judging with the bundled evil
prompt): batched (`--batch-size`, default 8) against one answer at a time, on the same answers
(the evil trait's eval pairs, trait and neutral answers), in one run; and the plain-sequence
scoring (one sequence per number) the tree replaces, on one answer. `benchmarks/gpu_check.py`
runs the same measurement on a GPU.

    python benchmarks/judge_speed.py [--model tiny] [--device cuda] [--dtype bfloat16] [--answers N]
"""

from __future__ import annotations

import argparse
import os
import time

from _setup import emit, load, model_args, synchronize

import defense_interp as di
from defense_interp.judges.base import render_template
from defense_interp.models import model_device, model_identity


def timed(model, judge, pairs) -> tuple[float, list]:
    synchronize(model_device(model))
    t0 = time.perf_counter()
    out = judge.judge(pairs)
    synchronize(model_device(model))
    return time.perf_counter() - t0, out


def measure(model, answers: int = 16, batch_size: int = 8, plain: bool = True, prompt: str | None = None) -> dict:
    """Batched against one-at-a-time `LocalJudge` throughput on `model` (module docstring), with
    `prompt` (default: the bundled evil prompt); the plain-sequence timing of one answer unless
    `plain` is False."""
    trait = di.Trait.builtin("evil")
    prompt = prompt or trait.judge_prompt()
    pairs = [(e.question, a) for e in trait.eval_pairs for a in (e.trait, e.neutral)][:answers]
    texts = [render_template(prompt, q, a) for q, a in pairs]
    batched_judge = di.LocalJudge(model, prompt, batch_size=batch_size)
    single_judge = di.LocalJudge(model, prompt, batch_size=1)
    batched_judge.judge(pairs[:batch_size])  # the one-time mask check and first-call costs
    single_judge.judge(pairs[:1])
    batched_s, batched = timed(model, batched_judge, pairs)
    single_s, single = timed(model, single_judge, pairs)
    out = {
        "answers": len(pairs),
        "batch_size": batch_size,
        # False: the prompts and the tree exceed a sliding window or the mask check failed (plain sequences)
        "tree_used": batched_judge.uses_tree(max(map(len, batched_judge.prompt_ids(texts)))),
        "batched_answers_per_s": round(len(pairs) / batched_s, 3),
        "one_at_a_time_answers_per_s": round(len(pairs) / single_s, 3),
        "batched_speedup": round(single_s / batched_s, 2),
        "target_speedup": 4.0,
        "tree_s_per_answer_one_at_a_time": round(single_s / len(pairs), 3),
        "batched_vs_single_max_mass_difference": max(
            abs(a.mass - b.mass) for a, b in zip(batched, single, strict=True)
        ),
        "how": "LocalJudge.judge over the same answers (warmed up); the tree scores all 101 numbers in one "
        "pass per batch; plain: one sequence per number (the fallback, and the brute force it is tested against)",
    }
    if plain:
        ids = batched_judge.prompt_ids(texts[:1])[0]
        synchronize(model_device(model))
        t0 = time.perf_counter()
        batched_judge.plain_logprobs(ids)
        synchronize(model_device(model))
        out["plain_sequences_s_per_answer"] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    model_args(ap)
    ap.add_argument("--answers", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    model = load(args)
    emit(
        {
            "benchmark": "judge_speed",
            "model": model_identity(model)["name"],
            "device": str(model_device(model)),
            "dtype": args.dtype,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
            **measure(model, args.answers, args.batch_size),
        }
    )


if __name__ == "__main__":
    main()
