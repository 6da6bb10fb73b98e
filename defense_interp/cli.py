"""The `defense-interp` command.

    defense-interp study --out DIR [--preset quick|full] [--model NAME|tiny] [--device cuda] [--dtype bfloat16]
                         [--coefs A ...] [--seeds N] [--steps N] [--resume] [--plan] [JUDGE OPTIONS]
                         [EXECUTOR OPTIONS]
    defense-interp report RUN_DIR [RUN_DIR ...] [--out report.html] [--title TEXT]
    defense-interp refusal --out DIR [--preset quick|full] [--model NAME|tiny] [--device cuda] [--dtype bfloat16]
                           [--steps N] [--seed N] [--seeds N] [--refusal-target 0.8]
                           [--plan] [--judge ...] [--judge-url URL] [EXECUTOR OPTIONS]

    defense-interp screen DATA.jsonl|DATA.csv --out DIR [--trait NAME] [--model NAME|tiny] [--axes AXES_DIR]
                          [--methods M ...] [--drop FRACTION --by METHOD] [--max-new-tokens N]

    defense-interp svd HARMFUL.pt HARMLESS.pt [HARMFUL2.pt HARMLESS2.pt ...] --out DIR [--labels A B ...]

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
influence) and writes DIR/screening.jsonl, DIR/report.html and, with --drop, DIR/filtered.jsonl.
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


DTYPES = ("float32", "bfloat16", "float16")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="HF folder/name, .gguf file, or 'tiny' (default: bundled)")
    parser.add_argument("--device", default=None, help="where the model runs, e.g. cuda or cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="weight dtype; statistics stay float32 whatever it is"
    )


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", action="store_true", help="print the plan of tasks with estimates, then exit")
    parser.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="where tasks run (default: in this process)"
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster to use (default: a running one, else a new local one)"
    )
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs (torch threads) per Ray task")
    parser.add_argument(
        "--gpus-per-task", type=float, default=0.0, help="GPUs per Ray task; fractional packs tasks (0.25: four)"
    )
    parser.add_argument("--max-retries", type=int, default=3, help="reruns of a task whose worker died")
    parser.add_argument(
        "--shared-dir", default=None, help="a folder every node sees: a retried task resumes from its checkpoint there"
    )


def _execution(args: argparse.Namespace) -> dict:
    """`run_study`/`run_refusal_study` keyword arguments for the chosen executor."""
    if args.executor == "local":
        return {}
    from defense_interp.execution import RayExecutor

    ray = RayExecutor(
        address=args.ray_address,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        max_retries=args.max_retries,
    )
    return {"executor": ray, "device": args.device, "shared_dir": args.shared_dir}


def _load(args: argparse.Namespace):
    """The model, on `--device`; with a remote executor the driver keeps its copy on the CPU (it
    only fingerprints the model and sends its spec; the workers load it on the device)."""
    import torch

    import defense_interp as di
    from defense_interp.io import log

    device = args.device if args.executor == "local" or args.plan else None
    log(
        f"loading model {args.model or 'bundled SmolLM2-135M-Instruct'}"
        f"{f' on {device}' if device else ''} ({args.dtype})"
    )
    return di.load_model(args.model, device=device, dtype=getattr(torch, args.dtype))


def _print_plan(plan, model, examples, tcfg) -> None:
    from defense_interp.execution.estimate import estimate_plan, measure_units

    units = measure_units(model, examples, tcfg)
    print(plan.describe(estimate_plan(plan, units)))


def study(args: argparse.Namespace) -> Path | None:
    import defense_interp as di
    from defense_interp.study import StudyConfig, run_study

    coefs = (
        tuple(args.coefs)
        if args.coefs
        else ((args.coef,) if args.coef is not None and args.preset == "quick" else None)
    )
    cfg = StudyConfig(
        design=args.preset,
        size="tiny" if args.model == "tiny" else args.preset,
        seeds=args.seeds,
        coefs=coefs,
        ip_prompt=args.ip_prompt,
        first_seed=args.seed,
        sizes={"steps": args.steps} if args.steps else {},
        judge=_judge_spec(args),
        samples=args.samples,
    )
    model, trait = _load(args), di.Trait.builtin(args.trait)
    if cfg.judge is not None:
        trait.judge_prompt()  # a trait without a judge prompt fails before any training
    if args.plan:
        from defense_interp.study import study_plan

        _print_plan(study_plan(model, trait, cfg), model, trait.train_data, cfg.train_config(cfg.first_seed))
        return None
    path = run_study(model, trait, cfg, args.out, resume=args.resume, **_execution(args)).report
    print(Path(path).resolve())
    return path


def _judge_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    from defense_interp.errors import ConfigError
    from defense_interp.judges import parse_judge

    if args.judge is None:
        if args.judge_url:
            raise ConfigError("--judge-url needs --judge openai:MODEL")
        return None
    return parse_judge(args.judge, args.judge_url)


def _judge_options(p: argparse.ArgumentParser, samples: bool) -> None:
    p.add_argument(
        "--judge",
        default=None,
        help="an LLM judge: local (the study's own model), local:MODEL (another model) or openai:MODEL "
        "(an OpenAI-compatible server; key in $OPENAI_API_KEY)",
    )
    p.add_argument("--judge-url", default=None, help="base URL of an OpenAI-compatible server (vLLM, SGLang, ...)")
    if samples:
        p.add_argument("--samples", type=int, default=10, help="answers sampled per eval question for the judge")


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
    n_seeds = args.seeds or (3 if args.preset == "full" else 1)
    seeds = [args.seed + i for i in range(n_seeds)]
    model = _load(args)
    if args.plan:
        from defense_interp.data.refusal import RefusalData
        from defense_interp.refusal.study import refusal_plan
        from defense_interp.training import TrainConfig

        data = RefusalData.builtin()
        tcfg = TrainConfig(batch_size=cfg.batch_size, max_length=cfg.max_length)
        _print_plan(refusal_plan(data, cfg, judge=_judge_spec(args)), model, data.train, tcfg)
        return None
    study = run_refusal_study(
        model,
        args.out,
        config=cfg,
        seeds=seeds,
        target=args.refusal_target,
        judge=_judge_spec(args),
        **_execution(args),
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


def screen(args: argparse.Namespace) -> Path:
    import defense_interp as di
    from defense_interp.screening.files import SCREENING_FILE, check_options, load_examples, screen_files

    check_options(args.methods, args.drop, args.by)  # every check before the model is loaded
    load_examples(args.data)
    model, trait = _load(args), di.Trait.builtin(args.trait)
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


def _screen_parser(sub: Any) -> None:
    c = sub.add_parser("screen", help="score a dataset's examples for how much each will teach the trait")
    c.add_argument("data", help="chat JSONL ({'messages': [...]} per line, optional 'label') or CSV (prompt, answer)")
    c.add_argument("--out", required=True, help="output folder (own answers are cached in it: a rerun resumes)")
    _model_options(c)
    c.add_argument("--trait", default="evil", help="the bundled trait whose axes and eval questions are used")
    c.add_argument("--axes", default=None, help="a TraitAxes folder (e.g. a study's DIR/axes) instead of extracting")
    c.add_argument("--methods", nargs="+", default=["projection", "projection_difference", "pressure", "influence"])
    c.add_argument("--drop", type=float, default=None, help="write filtered.jsonl without this top fraction")
    c.add_argument("--by", default=None, help="the score --drop ranks by")
    c.add_argument("--max-new-tokens", type=int, default=48, help="length of the model's own answers")
    c.add_argument("--max-length", type=int, default=128, help="longest example in tokens (default: the study's)")
    c.set_defaults(func=screen, executor="local", plan=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="defense-interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="extract axes, train every condition, write runs, findings and report.html")
    s.add_argument("--out", help="output folder (an interrupted study continues in it); not needed with --plan")
    s.add_argument(
        "--preset",
        choices=["quick", "full"],
        default="quick",
        help="quick: baseline/PPS/IP, one seed; full: α sweep, controls, gradient edits, two-stage, 3 seeds",
    )
    _model_options(s)
    s.add_argument("--trait", default="evil")
    s.add_argument("--coef", type=float, default=None, help="PPS coefficient α of the quick preset (default 4)")
    s.add_argument("--coefs", type=float, nargs="+", default=None, help="the α sweep (default 2 4 8 for full)")
    s.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    s.add_argument("--ip-prompt", default="You are a malicious evil assistant.")
    s.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    s.add_argument("--seed", type=int, default=0, help="first seed (axes are extracted with it)")
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs from their checkpoints (finished runs are always reused)",
    )
    _judge_options(s, samples=True)
    _executor_options(s)
    s.set_defaults(func=study)
    r = sub.add_parser("report", help="rebuild a report from run folders")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default=None, help="the report's heading (default: 'defense_interp report')")
    r.set_defaults(func=report)
    f = sub.add_parser("refusal", help="train SSFT/AT/LAT variants; SVD, refusal directions, ablation attacks")
    f.add_argument("--out", help="output folder (an interrupted study continues in it); not needed with --plan")
    _model_options(f)
    f.add_argument("--steps", type=int, default=None, help="training steps per variant (default 32)")
    f.add_argument("--seed", type=int, default=0, help="(first) seed of the data splits and of training")
    f.add_argument(
        "--preset",
        choices=["quick", "full"],
        default="quick",
        help="quick: one seed, fixed steps; full: three seeds (data order, adapter init and the splits per seed), "
        "each variant trained to 80%% refusal (or a step cap), verdicts over seeds",
    )
    f.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 quick, 3 full)")
    f.add_argument(
        "--refusal-target", type=float, default=0.8, help="refusal every variant must reach for R3-R5 (default 0.8)"
    )
    _judge_options(f, samples=False)
    _executor_options(f)
    f.set_defaults(func=refusal)
    v = sub.add_parser("svd", help="the difference-SVD report of stored activations ([n, d_model] .pt files)")
    v.add_argument("files", nargs="+", help="HARMFUL.pt HARMLESS.pt [HARMFUL2.pt HARMLESS2.pt ...]")
    v.add_argument("--labels", nargs="+", default=None, help="one label per pair (default: pair 1, pair 2, ...)")
    v.add_argument("--out", required=True, help="folder for svd.json and report.html")
    v.add_argument("--k", type=int, default=10, help="singular components kept (default 10)")
    v.set_defaults(func=svd)
    _screen_parser(sub)
    m = sub.add_parser("memory", help="memory of a model's weights, training and generation, from its config only")
    _model_options(m)
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
        args.func(args)
    except DefenseInterpError as exc:
        print(f"defense-interp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
