"""The `defense-interp` command.

    defense-interp study --out DIR [--preset quick|full|traits] [--model NAME|tiny] [--device cuda] [--dtype bfloat16]
                         [--trait NAME|PATH | --traits NAME|PATH ...] [--ip-prompt TEXT] [--coefs A ...] [--seeds N] [--steps N]
                         [--axes AXES_DIR] [--resume] [--plan] [JUDGE OPTIONS]
                         [EXECUTOR OPTIONS]
    defense-interp report RUN_DIR [RUN_DIR ...] [--out report.html] [--title TEXT]
    defense-interp refusal --out DIR [--preset quick|full] [--model NAME|tiny] [--device cuda] [--dtype bfloat16]
                           [--steps N] [--seed N] [--seeds N] [--refusal-target 0.8] [--harmless-bound 0.25]
                           [--plan] [--judge ...] [--judge-url URL] [EXECUTOR OPTIONS]

    defense-interp screen DATA.jsonl|DATA.csv --out DIR [--trait NAME] [--model NAME|tiny] [--axes AXES_DIR]
                          [--methods M ...] [--drop FRACTION --by METHOD] [--max-new-tokens N]
    defense-interp screen-study --out DIR [--trait NAME|PATH] [--model NAME|tiny] [--seeds N] [--contamination F]
                                [--k K] [--drop F] [--coef A] [--steps N] [--resume] [EXECUTOR OPTIONS]

    defense-interp trait list
    defense-interp trait new NAME --description TEXT --generator openai:MODEL [--base-url URL] [--out PATH]
                             [--n-train N]

    defense-interp svd HARMFUL.pt HARMLESS.pt [HARMFUL2.pt HARMLESS2.pt ...] --out DIR [--labels A B ...]

    defense-interp export RUN_DIR --out DIR [--merged] [--model NAME|FOLDER]
    defense-interp memory [--model NAME|FOLDER|FILE.gguf] [--dtype bfloat16] [--device cuda] [--n-devices N]
                        [--memory GIB] [--batch-size N] [--max-length N] [--lora-rank R | --full-weights]

    JUDGE OPTIONS: [--judge local|local:MODEL|openai:MODEL] [--judge-url URL] [--samples N]
    EXECUTOR OPTIONS: [--executor local|ray] [--ray-address ADDR] [--cpus-per-task N] [--gpus-per-task F]
                      [--max-retries N] [--shared-dir DIR]

`study --preset full` runs every condition and control over several seeds and writes
DIR/findings.json with a verdict per claim; `--model tiny` shrinks every size for smoke tests.
`refusal` trains SSFT, embedding-AT and LAT variants and writes the refusal-representation
analysis (DIR/refusal.json, DIR/report.html). A study is a plan of tasks: `--plan` prints it with
an estimate per task (from a measured training step) and exits; `--executor ray` runs the tasks
on a Ray cluster (docs/scaling.md), with the same numbers as in-process. `memory` reads a model's
config only (no weights) and prints the memory of its weights, of LoRA training at the study's batch
and length and of generation, whether each fits the device(s), and with several devices the
placement of the layers. `screen` scores every example of a dataset on the untrained model (which
examples will teach the trait: projection, projection difference, gradient pressure, trait
influence) and writes DIR/screening.jsonl, DIR/report.html and, with --drop, DIR/filtered.jsonl;
`screen-study` trains on what the scores rank in a contaminated mixture and compares filtering with
PPS and IP (DIR/findings.json with S1–S3, DIR/report.html).
`--judge` adds an LLM judge's 0–100 scores of sampled answers (docs/judges.md):
to every run of a study, before and after training (extra sub-tests of claims 4 and 5); to the
refusal study's answers beside the substring rule.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this toolkit never needs the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from defense_interp.cli.options import (
    execution,
    executor_options,
    judge_options,
    judge_spec,
    load,
    load_trait,
    model_options,
    print_plan,
    tracked,
)
from defense_interp.cli.screening import screen_parsers
from defense_interp.cli.traits import trait_parsers


def study(args: argparse.Namespace) -> Path | None:
    from defense_interp.axes import TraitAxes
    from defense_interp.errors import ConfigError
    from defense_interp.study import StudyConfig, run_study

    coefs = (
        tuple(args.coefs)
        if args.coefs
        else ((args.coef,) if args.coef is not None and args.preset == "quick" else None)
    )
    traits = args.preset == "traits"
    cfg = StudyConfig(
        design="quick" if traits else args.preset,
        size="tiny" if args.model == "tiny" else ("quick" if traits else args.preset),
        seeds=args.seeds or (3 if traits else None),
        coefs=coefs,
        ip_prompt=args.ip_prompt,
        first_seed=args.seed,
        sizes={"steps": args.steps} if args.steps else {},
        judge=judge_spec(args),
        samples=args.samples,
    )
    if traits:
        if args.axes:
            raise ConfigError("--axes gives one trait's axes; --preset traits extracts each trait's own")
        return _trait_study(args, cfg)
    trait = load_trait(args.trait)
    axes = TraitAxes.load(args.axes) if args.axes else None
    if cfg.judge is not None:
        trait.judge_prompt()  # a trait without a judge prompt fails before any training
    model = load(args)
    if args.plan:
        from defense_interp.study import study_plan

        print_plan(study_plan(model, trait, cfg), model, trait.train_data, cfg.train_config(cfg.first_seed))
        return None
    path = run_study(model, trait, cfg, args.out, resume=args.resume, axes=axes, **execution(args)).report
    print(Path(path).resolve())
    return path


def _trait_study(args: argparse.Namespace, cfg: Any) -> Path:
    """`study --preset traits`: the quick design over three seeds for each trait (`study.traits`)."""
    from defense_interp.data.traits import Trait
    from defense_interp.errors import ConfigError
    from defense_interp.study.traits import run_trait_study

    if args.plan:
        raise ConfigError(
            "--preset traits runs one study per trait; print one with --preset quick --seeds 3 --trait NAME --plan"
        )
    traits = [load_trait(t) for t in (args.traits or Trait.builtins())]
    for t in traits:
        cfg.for_trait(t)  # every trait's IP prompt is there before the model is loaded
        if cfg.judge is not None:
            t.judge_prompt()
    path = run_trait_study(load(args), traits, cfg, args.out, resume=args.resume, **execution(args)).report
    print(Path(path).resolve())
    return path


def report(args: argparse.Namespace) -> Path:
    import defense_interp as di

    runs = [di.Run.load(p) for p in args.runs]
    cmp = di.compare(*runs)  # the plain baseline runs, if any, are found by compare()
    path = cmp.report(args.out, axes=runs[0].axes(), findings=di.assess(cmp), title=args.title)
    print(Path(path).resolve())
    return path


def refusal(args: argparse.Namespace) -> Path | None:
    import dataclasses

    from defense_interp.io import log
    from defense_interp.refusal import REFUSAL_PRESETS, run_refusal_study
    from defense_interp.refusal.study import REPORT_FILE

    tiny = args.model == "tiny"
    cfg = REFUSAL_PRESETS[
        ("tiny" if tiny else "quick") if args.preset == "quick" else ("tiny-full" if tiny else "full")
    ]
    cfg = dataclasses.replace(cfg, seed=args.seed, **({"steps": args.steps} if args.steps is not None else {}))
    if cfg.match_target is not None:  # matched training stops at the precondition's thresholds
        cfg = dataclasses.replace(cfg, match_target=args.refusal_target, harmless_bound=args.harmless_bound)
    n_seeds = args.seeds or (3 if args.preset == "full" else 1)
    seeds = [args.seed + i for i in range(n_seeds)]
    model = load(args)
    if args.plan:
        from defense_interp.data.refusal import RefusalData
        from defense_interp.refusal.study import refusal_plan
        from defense_interp.training import TrainConfig

        data = RefusalData.builtin()
        tcfg = TrainConfig(batch_size=cfg.batch_size, max_length=cfg.max_length)
        print_plan(refusal_plan(data, cfg, judge=judge_spec(args)), model, data.train, tcfg)
        return None
    study = run_refusal_study(
        model,
        args.out,
        config=cfg,
        seeds=seeds,
        target=args.refusal_target,
        bound=args.harmless_bound,
        judge=judge_spec(args),
        **execution(args),
    )
    path = Path(args.out) / REPORT_FILE
    log(f"refusal study done in {study.wall_seconds:.0f} s")
    print(path.resolve())
    return path


def svd(args: argparse.Namespace) -> Path:
    from defense_interp.errors import ConfigError
    from defense_interp.refusal.stored import stored_svd, write_svd_report

    if len(args.files) % 2:
        raise ConfigError(f"give the files in pairs, HARMFUL.pt HARMLESS.pt; got {len(args.files)} files")
    pairs = list(zip(args.files[::2], args.files[1::2], strict=True))
    results = stored_svd(pairs, args.labels, k=args.k)
    path = write_svd_report(results, args.out)
    for r in results:
        print(
            f"{r.label}: top-1 uncentred {float(r.svd.explained[0]):.3f}, centred "
            f"{float(r.svd.explained_centered[0]):.3f}, without outliers {float(r.svd.explained_without_outliers[0]):.3f}; "
            f"outlier channels {list(r.svd.outlier_channels)}"
        )
    print(Path(path).resolve())
    return path


def export(args: argparse.Namespace) -> Path:
    import defense_interp as di
    from defense_interp.training import export_run

    run = di.Run.load(args.run)
    out = export_run(load(args), run, args.out, format="merged" if args.merged else "peft")
    print(out.resolve())
    return out


def memory(args: argparse.Namespace) -> None:
    import torch

    from defense_interp.memory import estimate_memory

    p = estimate_memory(
        args.model,
        dtype=getattr(torch, args.dtype),
        device=args.device or "cpu",
        n_devices=args.n_devices,
        memory_gib=args.memory,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora=not args.full_weights,
        lora_rank=args.lora_rank,
    )
    print(p.describe())


def _refusal_parser(sub: Any) -> None:
    f = sub.add_parser("refusal", help="train SSFT/AT/LAT variants; SVD, refusal directions, ablation attacks")
    f.add_argument("--out", help="output folder (an interrupted study continues in it); not needed with --plan")
    model_options(f)
    f.add_argument("--steps", type=int, default=None, help="training steps per variant (default 32)")
    f.add_argument("--seed", type=int, default=0, help="(first) seed of the data splits and of training")
    f.add_argument(
        "--preset",
        choices=["quick", "full"],
        default="quick",
        help="quick: one seed, fixed steps; full: three seeds (data order, adapter init and the splits per seed), "
        "each variant trained until it refuses 80%% of harmful and at most 25%% of harmless prompts (or a step cap), "
        "verdicts over seeds",
    )
    f.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    f.add_argument(
        "--refusal-target",
        type=float,
        default=0.8,
        help="refusal of harmful prompts every variant must reach for R3-R5, and matched training's stop (default 0.8)",
    )
    f.add_argument(
        "--harmless-bound",
        type=float,
        default=0.25,
        help="refusal of harmless prompts no variant may exceed for R3-R5, and matched training's stop (default 0.25)",
    )
    judge_options(f, samples=False)
    executor_options(f)
    f.set_defaults(func=refusal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="defense-interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="extract axes, train every condition, write runs, findings and report.html")
    s.add_argument("--out", help="output folder (an interrupted study continues in it); not needed with --plan")
    s.add_argument(
        "--preset",
        choices=["quick", "full", "traits"],
        default="quick",
        help="quick: baseline/PPS/IP, one seed; full: α sweep, controls, gradient edits, two-stage, 3 seeds; "
        "traits: the quick design over 3 seeds for each trait (--traits), with a claim × trait table",
    )
    model_options(s)
    s.add_argument("--trait", default="evil", help="a bundled trait's name or a trait file (JSON)")
    s.add_argument("--traits", nargs="+", default=None, help="--preset traits: the traits (default: every bundled one)")
    s.add_argument("--coef", type=float, default=None, help="PPS coefficient α of the quick preset (default 4)")
    s.add_argument("--coefs", type=float, nargs="+", default=None, help="the α sweep (default 2 4 8 for full)")
    s.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    s.add_argument("--ip-prompt", default=None, help="IP's system prompt (default: the trait's inoculation_prompt)")
    s.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    s.add_argument("--seed", type=int, default=0, help="first seed (axes are extracted with it)")
    s.add_argument("--axes", default=None, help="a TraitAxes folder to use instead of extracting the trait's axes")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs from their checkpoints (finished runs are always reused)",
    )
    judge_options(s, samples=True)
    executor_options(s)
    s.set_defaults(func=study)
    r = sub.add_parser("report", help="rebuild a report from run folders")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default=None, help="the report's heading (default: 'defense_interp report')")
    r.set_defaults(func=report)
    _refusal_parser(sub)
    v = sub.add_parser("svd", help="the difference-SVD report of stored activations ([n, d_model] .pt files)")
    v.add_argument("files", nargs="+", help="HARMFUL.pt HARMLESS.pt [HARMFUL2.pt HARMLESS2.pt ...]")
    v.add_argument("--labels", nargs="+", default=None, help="one label per pair (default: pair 1, pair 2, ...)")
    v.add_argument("--out", required=True, help="folder for svd.json and report.html")
    v.add_argument("--k", type=int, default=10, help="singular components kept (default 10)")
    v.set_defaults(func=svd)
    screen_parsers(sub)
    trait_parsers(sub)
    e = sub.add_parser("export", help="a trained run as a PEFT adapter folder or (--merged) an HF model folder")
    e.add_argument("run", help="the run's folder (e.g. DIR/seed0/baseline)")
    e.add_argument("--out", required=True, help="the folder to write")
    e.add_argument(
        "--merged", action="store_true", help="an HF model with the trained weights merged in (LoRA or full)"
    )
    model_options(e)
    e.set_defaults(func=export)
    m = sub.add_parser("memory", help="memory of a model's weights, training and generation, from its config only")
    model_options(m)
    m.add_argument("--n-devices", type=int, default=None, help="spread the layers over this many devices")
    m.add_argument("--memory", type=float, default=None, help="GiB per device (default: what this machine reports)")
    m.add_argument("--batch-size", type=int, default=4, help="training batch (default: the study's, 4)")
    m.add_argument("--max-length", type=int, default=128, help="training length in tokens (default: the study's, 128)")
    m.add_argument("--lora-rank", type=int, default=8)
    m.add_argument("--full-weights", action="store_true", help="estimate full-weight training instead of LoRA")
    m.set_defaults(func=memory)
    args = parser.parse_args(argv)
    if args.command in ("study", "refusal") and args.out is None and not args.plan:
        parser.error(f"{args.command} needs --out DIR (unless --plan)")
    from defense_interp.errors import DefenseInterpError

    try:
        with tracked(args):
            args.func(args)
    except DefenseInterpError as exc:
        print(f"defense-interp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
