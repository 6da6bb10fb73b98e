"""`defense-interp screen` (score a dataset's examples) and `defense-interp screen-study` (the
screening study: training on what the scores rank, filtering beside PPS and IP)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from defense_interp.cli.options import execution, executor_options, load, load_trait, model_options

__all__ = ["screen", "screen_parsers", "screen_study"]


def screen(args: argparse.Namespace) -> Path:
    import defense_interp as di
    from defense_interp.screening.files import SCREENING_FILE, check_options, load_examples, screen_files

    check_options(args.methods, args.drop, args.by)  # every check before the model is loaded
    load_examples(args.data)
    trait = load_trait(args.trait)
    model = load(args)
    if args.axes:
        axes = di.TraitAxes.load(args.axes)
    else:  # the quick study's extraction sizes
        axes = di.extract_trait_axes(model, trait, n_pairs=5, n_questions=10, max_new_tokens=32)
    screen_files(
        model, args.data, axes, args.out, trait=trait, methods=args.methods, drop=args.drop, by=args.by,
        config=di.TrainConfig(max_length=args.max_length), max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    print((Path(args.out) / SCREENING_FILE).resolve())
    return Path(args.out)


def screen_parsers(sub: Any) -> None:
    """The `screen` and `screen-study` commands' parsers."""
    c = sub.add_parser("screen", help="score a dataset's examples for how much each will teach the trait")
    c.add_argument("data", help="chat JSONL ({'messages': [...]} per line, optional 'label') or CSV (prompt, answer)")
    c.add_argument("--out", required=True, help="output folder (own answers are cached in it: a rerun resumes)")
    model_options(c)
    c.add_argument(
        "--trait", default="evil", help="a bundled trait's name or a trait file (its axes and eval questions)"
    )
    c.add_argument("--axes", default=None, help="a TraitAxes folder (e.g. a study's DIR/axes) instead of extracting")
    c.add_argument("--methods", nargs="+", default=["projection", "projection_difference", "pressure", "influence"])
    c.add_argument("--drop", type=float, default=None, help="write filtered.jsonl without this top fraction")
    c.add_argument("--by", default=None, help="the score --drop ranks by")
    c.add_argument("--max-new-tokens", type=int, default=48, help="length of the model's own answers")
    c.add_argument("--max-length", type=int, default=128, help="longest example in tokens (default: the study's)")
    c.set_defaults(func=screen, executor="local", plan=False)
    d = sub.add_parser(
        "screen-study", help="validate the scores by training on what they rank; filtering against PPS and IP"
    )
    d.add_argument("--out", required=True, help="output folder (an interrupted study continues in it)")
    model_options(d)
    d.add_argument("--trait", default="evil", help="a bundled trait's name or a trait file with normal answers")
    d.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    d.add_argument("--seed", type=int, default=0, help="first seed (the axes, mixture and screening use it)")
    d.add_argument("--contamination", type=float, default=0.25, help="the mixture's fraction of trait examples")
    d.add_argument("--k", type=int, default=None, help="size of top/random/bottom-k (default: the trait examples)")
    d.add_argument("--drop", type=float, default=None, help="fraction each filter drops (default: --contamination)")
    d.add_argument("--coef", type=float, default=4.0, help="PPS's α on the mixture (default 4)")
    d.add_argument("--ip-prompt", default=None, help="IP's prompt (default: the trait's inoculation_prompt)")
    d.add_argument("--steps", type=int, default=None, help="override the training steps of every run")
    d.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    executor_options(d)
    d.set_defaults(func=screen_study)


def screen_study(args: argparse.Namespace) -> Path:
    from defense_interp.study.screen_study import ScreenStudyConfig, run_screen_study

    if args.plan:
        from defense_interp.errors import ConfigError

        raise ConfigError("screen-study has no --plan: its training sets depend on the screening's scores")
    trait = load_trait(args.trait)
    cfg = ScreenStudyConfig(
        size="tiny" if args.model == "tiny" else "default",
        seeds=args.seeds,
        first_seed=args.seed,
        contamination=args.contamination,
        k=args.k,
        drop=args.drop,
        coef=args.coef,
        ip_prompt=args.ip_prompt or trait.ip_prompt(),
        sizes={"steps": args.steps} if args.steps else {},
    )  # every check before the model is loaded
    cfg.check(len(trait.train_data))
    model = load(args)
    path = run_screen_study(model, trait, cfg, args.out, resume=args.resume, **execution(args)).report
    print(Path(path).resolve())
    return path
