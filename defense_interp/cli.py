"""The `defense-interp` command.

    defense-interp study --out DIR [--preset quick|full] [--model NAME|tiny] [--device cuda] [--dtype bfloat16]
                         [--coefs A ...] [--seeds N] [--steps N] [--resume]
    defense-interp report RUN_DIR [RUN_DIR ...] [--out report.html] [--title TEXT]
    defense-interp refusal --out DIR [--model NAME|tiny] [--device cuda] [--dtype bfloat16] [--steps N] [--seed N]

`study --preset full` runs every condition and control over several seeds and writes
DIR/findings.json with a verdict per claim; `--model tiny` shrinks every size for smoke tests.
`refusal` trains SSFT, embedding-AT and LAT variants and writes the refusal-representation
analysis (DIR/refusal.json, DIR/report.html).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this toolkit never needs the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


DTYPES = ("float32", "bfloat16", "float16")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="HF folder/name, .gguf file, or 'tiny' (default: bundled)")
    parser.add_argument("--device", default=None, help="where the model runs, e.g. cuda or cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="weight dtype; statistics stay float32 whatever it is"
    )


def _load(args: argparse.Namespace):
    import torch

    import defense_interp as di
    from defense_interp.io import log

    log(
        f"loading model {args.model or 'bundled SmolLM2-135M-Instruct'}"
        f"{f' on {args.device}' if args.device else ''} ({args.dtype})"
    )
    return di.load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))


def study(args: argparse.Namespace) -> Path:
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
    )
    _, _, path = run_study(_load(args), di.Trait.builtin(args.trait), cfg, args.out, resume=args.resume)
    print(Path(path).resolve())
    return path


def report(args: argparse.Namespace) -> Path:
    import defense_interp as di

    runs = [di.Run.load(p) for p in args.runs]
    cmp = di.compare(*runs)  # the plain baseline runs, if any, are found by compare()
    path = cmp.report(args.out, axes=runs[0].axes(), findings=di.assess(cmp), title=args.title)
    print(Path(path).resolve())
    return path


def refusal(args: argparse.Namespace) -> Path:
    import dataclasses

    from defense_interp.io import log
    from defense_interp.refusal import REFUSAL_PRESETS, run_refusal_study
    from defense_interp.refusal.study import REPORT_FILE

    cfg = REFUSAL_PRESETS["tiny" if args.model == "tiny" else "quick"]
    cfg = dataclasses.replace(cfg, seed=args.seed, **({"steps": args.steps} if args.steps is not None else {}))
    study = run_refusal_study(_load(args), args.out, config=cfg)
    path = Path(args.out) / REPORT_FILE
    log(f"refusal study done in {study.wall_seconds:.0f} s")
    print(path.resolve())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="defense-interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="extract axes, train every condition, write runs, findings and report.html")
    s.add_argument("--out", required=True, help="output folder (an interrupted study continues in it)")
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
    s.set_defaults(func=study)
    r = sub.add_parser("report", help="rebuild a report from run folders")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default=None, help="the report's heading (default: 'defense_interp report')")
    r.set_defaults(func=report)
    f = sub.add_parser("refusal", help="train SSFT/AT/LAT variants; SVD, refusal directions, ablation attacks")
    f.add_argument("--out", required=True, help="output folder (an interrupted study continues in it)")
    _model_options(f)
    f.add_argument("--steps", type=int, default=None, help="training steps per variant (default 32)")
    f.add_argument("--seed", type=int, default=0, help="seed of the data splits and of training")
    f.set_defaults(func=refusal)
    args = parser.parse_args(argv)
    from defense_interp.errors import DefenseInterpError

    try:
        args.func(args)
    except DefenseInterpError as exc:
        print(f"defense-interp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
