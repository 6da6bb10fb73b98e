"""Options and helpers every `defense-interp` command shares: the model and executor options, the
model's loading, the plan's printout, the judge's options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defense_interp.errors import ConfigError
from defense_interp.tracking import TRACKERS

__all__ = [
    "DTYPES",
    "execution",
    "executor_options",
    "judge_options",
    "judge_spec",
    "load",
    "load_trait",
    "model_options",
    "print_plan",
    "tracked",
]

DTYPES = ("float32", "bfloat16", "float16")


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="HF folder/name, .gguf file, gemma3-270m (the [gemma] extra) or tiny (default: the bundled SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--device", default=None, help="where the model runs, e.g. cuda or cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="weight dtype; statistics stay float32 whatever it is"
    )


def executor_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--track",
        choices=TRACKERS,
        default=None,
        help="log every training run live to TensorBoard or W&B (offline) under OUT/tracking, then the findings and report",
    )


@contextmanager
def tracked(args: argparse.Namespace) -> Iterator[None]:
    """With `--track`, every training run of the command reports to the tracker (`defense_interp.tracking`),
    and the study's findings (as a table) and report follow at the end."""
    kind = getattr(args, "track", None)
    if not kind or getattr(args, "plan", False):
        yield
        return
    from defense_interp import tracking

    if args.executor != "local":
        raise ConfigError("--track reports the runs trained in this process: use it with --executor local")
    out = Path(args.out)
    tracker = tracking.make_tracker(kind, out / "tracking", group=out.resolve().name)
    with tracking.use(tracker):
        yield
    rows = []
    for name in ("findings.json", "refusal_findings.json"):  # the study's and screen-study's; the refusal study's
        if (out / name).is_file():
            record = json.loads((out / name).read_text())
            rows += [{"claim": f["title"], "verdict": f["verdict"]} for f in record.get("findings", [])]
    tracker.log_study("study", rows, out / "report.html" if (out / "report.html").is_file() else None)


def execution(args: argparse.Namespace) -> dict:
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


def load(args: argparse.Namespace):
    """The model, on `--device`; with a remote executor the driver keeps its copy on the CPU (it
    only fingerprints the model and sends its spec; the workers load it on the device)."""
    import torch

    import defense_interp as di
    from defense_interp.io import log

    local = getattr(args, "executor", "local") == "local" or getattr(args, "plan", False)
    device = args.device if local else None
    log(
        f"loading model {args.model or 'bundled SmolLM2-135M-Instruct'}"
        f"{f' on {device}' if device else ''} ({args.dtype})"
    )
    return di.load_model(args.model, device=device, dtype=getattr(torch, args.dtype))


def print_plan(plan, model, examples, tcfg) -> None:
    from defense_interp.execution.estimate import estimate_plan, measure_units

    units = measure_units(model, examples, tcfg)
    print(plan.describe(estimate_plan(plan, units)))


def judge_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    from defense_interp.judges import parse_judge

    if args.judge is None:
        if args.judge_url:
            raise ConfigError("--judge-url needs --judge openai:MODEL")
        return None
    return parse_judge(args.judge, args.judge_url)


def judge_options(p: argparse.ArgumentParser, samples: bool) -> None:
    p.add_argument(
        "--judge",
        default=None,
        help="an LLM judge: local (the study's own model), local:MODEL (another model) or openai:MODEL "
        "(an OpenAI-compatible server; key in $OPENAI_API_KEY)",
    )
    p.add_argument("--judge-url", default=None, help="base URL of an OpenAI-compatible server (vLLM, SGLang, ...)")
    if samples:
        p.add_argument("--samples", type=int, default=10, help="answers sampled per eval question for the judge")


def load_trait(spec: str) -> Any:
    """`--trait NAME|PATH`: a bundled trait, or a trait file (`Trait.named`)."""
    from defense_interp.data.traits import Trait

    return Trait.named(spec)
