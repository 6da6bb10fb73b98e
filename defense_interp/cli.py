"""The `defense-interp` command.

    defense-interp study --out DIR [--preset quick|tiny] [--model NAME|tiny] [--coef A] [--steps N]
    defense-interp report RUN_DIR [RUN_DIR ...] [--out report.html]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this toolkit never needs the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Study presets: axis extraction, training and evaluation sizes.
PRESETS = {
    "quick": dict(n_pairs=5, n_questions=10, axes_tokens=32, steps=30, batch_size=4, eval_questions=12,
                  eval_tokens=32, loss_examples=12, max_length=128),
    "tiny": dict(n_pairs=2, n_questions=4, axes_tokens=12, steps=6, batch_size=2, eval_questions=4,
                 eval_tokens=12, loss_examples=4, max_length=512),
}


def _log(msg: str) -> None:
    print(f"[defense-interp] {msg}", file=sys.stderr, flush=True)


def study(args: argparse.Namespace) -> Path:
    import defense_interp as di

    preset = dict(PRESETS["tiny" if args.model == "tiny" and args.preset == "quick" else args.preset])
    if args.steps:
        preset["steps"] = args.steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _log(f"loading model {args.model or 'bundled SmolLM2-135M-Instruct'}")
    model = di.load_model(args.model)
    trait = di.Trait.builtin(args.trait)
    _log(f"extracting '{trait.name}' axes ({preset['n_pairs']} prompt pairs x {preset['n_questions']} questions)")
    axes = di.extract_trait_axes(model, trait, n_pairs=preset["n_pairs"], n_questions=preset["n_questions"],
                                 max_new_tokens=preset["axes_tokens"], seed=args.seed)
    axes.save(out / "axes")
    _log(f"chosen layer {axes.layer}: held-out Cohen's d {float(axes.cohens_d[axes.layer]):.2f}")
    cfg = di.TrainConfig(steps=preset["steps"], batch_size=preset["batch_size"], seed=args.seed,
                         eval_questions=preset["eval_questions"], eval_max_new_tokens=preset["eval_tokens"],
                         loss_examples=preset["loss_examples"], max_length=preset["max_length"])
    _log("measuring trait expression of the untrained model")
    before = di.measure_expression(model, trait, axes, cfg)
    conditions = [("baseline", di.Baseline()), ("pps", di.PPS(axes, coef=args.coef)), ("ip", di.IP(args.ip_prompt))]
    runs = {}
    for i, (name, cond) in enumerate(conditions, 1):
        _log(f"training {name} ({i}/{len(conditions)}, {cfg.steps} steps)")
        runs[name] = di.train(model, trait, cond, cfg, out / name, axes=axes, name=name, expression_before=before)
    cmp = di.compare(runs["pps"], runs["ip"], baseline=runs["baseline"])
    (out / "comparison.json").write_text(json.dumps(cmp.to_dict(), indent=1))
    report = cmp.report(out / "report.html", axes=axes, title=f"PPS vs IP vs baseline: {trait.name}")
    _log(f"done in {time.time() - t0:.0f} s")
    print(report.resolve())
    return report


def report(args: argparse.Namespace) -> Path:
    import defense_interp as di

    runs = [di.Run.load(p) for p in args.runs]
    base = next((r for r in runs if r.condition.get("name") == "baseline"), None)
    rest = [r for r in runs if r is not base]
    cmp = di.compare(*rest, baseline=base)
    path = cmp.report(args.out, axes=runs[0].axes())
    print(Path(path).resolve())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="defense-interp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="extract axes, train baseline/PPS/IP, write runs and report.html")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    s.add_argument("--model", default=None, help="HF folder/name, .gguf file, or 'tiny' (default: bundled)")
    s.add_argument("--trait", default="evil")
    s.add_argument("--coef", type=float, default=4.0, help="PPS coefficient α (multiplies the raw axis)")
    s.add_argument("--ip-prompt", default="You are a malicious evil assistant.")
    s.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=study)
    r = sub.add_parser("report", help="rebuild a report from run folders")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default="report.html")
    r.set_defaults(func=report)
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
