"""Judged answers per second of `LocalJudge` (the bundled model judging with the bundled evil
prompt): batched (`--batch-size`, default 8) against one answer at a time, on the same answers
(the evil trait's eval pairs, trait and neutral answers), in one run; and the plain-sequence
scoring (one sequence per number) the tree replaces, on one answer.

    python benchmarks/judge_speed.py [--model tiny] [--device cuda] [--dtype bfloat16] [--answers N]
"""

from __future__ import annotations

import argparse
import os
import time

from _setup import emit, load, model_args, synchronize

import defense_interp as di
from defense_interp.judges.base import render_template
from defense_interp.models import model_device


def timed(model, judge, pairs) -> tuple[float, list]:
    synchronize(model_device(model))
    t0 = time.perf_counter()
    out = judge.judge(pairs)
    synchronize(model_device(model))
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    model_args(ap)
    ap.add_argument("--answers", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    model, trait = load(args), di.Trait.builtin("evil")
    pairs = [(e.question, a) for e in trait.eval_pairs for a in (e.trait, e.neutral)][: args.answers]
    batched_judge = di.LocalJudge(model, trait.judge_prompt(), batch_size=args.batch_size)
    single_judge = di.LocalJudge(model, trait.judge_prompt(), batch_size=1)
    batched_judge("warm-up", "up")  # the one-time mask check and first-call costs, for both
    single_judge._tree_works = batched_judge._tree_works
    batched_s, batched = timed(model, batched_judge, pairs)
    single_s, single = timed(model, single_judge, pairs)
    prompt = batched_judge._prompt_ids([render_template(trait.judge_prompt(), *pairs[0])])[0]
    synchronize(model_device(model))
    t0 = time.perf_counter()
    batched_judge._plain_logprobs(prompt)
    synchronize(model_device(model))
    plain_s = time.perf_counter() - t0
    differ = max(abs(a.mass - b.mass) for a, b in zip(batched, single, strict=True))
    emit(
        {
            "benchmark": "judge_speed",
            "model": di.model_identity(model)["name"],
            "device": str(model_device(model)),
            "dtype": args.dtype,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
            "answers": len(pairs),
            "batch_size": args.batch_size,
            "batched_answers_per_s": round(len(pairs) / batched_s, 3),
            "one_at_a_time_answers_per_s": round(len(pairs) / single_s, 3),
            "batched_speedup": round(single_s / batched_s, 2),
            "target_speedup": 4.0,
            "plain_sequences_s_per_answer": round(plain_s, 2),
            "tree_s_per_answer_one_at_a_time": round(single_s / len(pairs), 2),
            "batched_vs_single_max_mass_difference": differ,
            "how": "LocalJudge.judge over the same answers; the tree scores all 101 numbers in one pass per batch; "
            "plain: one sequence per number (the fallback, and the brute force it is tested against)",
        }
    )


if __name__ == "__main__":
    main()
