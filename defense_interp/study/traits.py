"""The cross-trait study (`defense-interp study --preset traits`): the quick design (baseline, PPS,
IP, probes at the start and end) over three seeds for each trait — every bundled trait unless
traits are given — each a whole study in its own folder (`DIR/<trait>/`: runs, findings, report),
then the claims side by side: `DIR/traits.json` holds, per claim and trait, the verdict and the
claim's primary sub-test (its effect, 95% interval and what the interval is over), and
`DIR/report.html` shows that table first, with a link to each trait's report.

Traits run one after another (each study's tasks go to the executor given); an interrupted study
run again reuses every finished run, of every trait.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defense_interp.claims import Findings
from defense_interp.data.traits import Trait
from defense_interp.errors import ConfigError
from defense_interp.io import log, write_json
from defense_interp.provenance import __version__
from defense_interp.report.html import write_page
from defense_interp.study.config import StudyConfig
from defense_interp.study.runner import REPORT_FILE, StudyResult, run_study
from defense_interp.types import Model

__all__ = ["TRAITS_FILE", "TraitsResult", "run_trait_study", "trait_table"]

TRAITS_FILE = "traits.json"


@dataclass(frozen=True)
class TraitsResult:
    """The per-trait studies and the claim × trait table (`trait_table`), with the report's path."""

    studies: dict[str, StudyResult]
    table: list[dict[str, Any]]
    report: Path


def trait_table(findings: dict[str, Findings]) -> list[dict[str, Any]]:
    """One row per claim: for each trait its verdict, and the claim's primary sub-test as
    `effect [low, high]` with what its interval is over."""
    rows = []
    first = next(iter(findings.values()))
    for i, f in enumerate(first.findings):
        row: dict[str, Any] = {"claim": f"{f.claim}. {f.title}"}
        for name, fs in findings.items():
            g = fs.findings[i]
            t = g.primary
            e = t.effect
            shown = (
                "—"
                if e is None
                else f"{e.mean:.3g} " + ("(no interval)" if math.isnan(e.low) else f"[{e.low:.3g}, {e.high:.3g}]")
            )
            row[name] = f"{g.summary} · {t.name}: {shown}" + ("" if e is None else f" (over {e.over})")
        rows.append(row)
    return rows


def run_trait_study(
    model: Model, traits: Sequence[Trait], cfg: StudyConfig, out: str | Path, **kwargs: Any
) -> TraitsResult:
    """Run `cfg`'s study for each trait into `out/<trait>/` (`run_study`, which takes `kwargs`) and
    write the claim × trait table and its report (module docstring)."""
    if not traits:
        raise ConfigError("the cross-trait study needs at least one trait")
    names = [t.name for t in traits]
    if len(set(names)) != len(names):
        raise ConfigError(f"the traits need distinct names, got {names}")
    for t in traits:
        cfg.for_trait(t)  # every trait's IP prompt is there before any training
    out = Path(out)
    studies = {}
    for t in traits:
        log(f"cross-trait study: {t.name} into {out / t.name}")
        studies[t.name] = run_study(model, t, cfg, out / t.name, **kwargs)
    table = trait_table({n: s.findings for n, s in studies.items()})
    write_json(
        out / TRAITS_FILE,
        {
            "traits": names,
            "table": table,
            "findings": {n: s.findings.to_dict() for n, s in studies.items()},
            "provenance": {"package_version": __version__, "design": cfg.design, "seeds": cfg.n_seeds},
        },
    )
    links = " · ".join(f"<a href='{n}/{REPORT_FILE}'>{n}</a>" for n in names)
    head = [
        "<h1>Defences across traits</h1>",
        f"<p class=meta>{cfg.design} design, {cfg.n_seeds} seeds per trait · each trait's report: {links}</p>",
    ]
    caption = (
        "For each claim and trait: the verdict by the rules of docs/study.md, and the claim's primary "
        "sub-test (its first counted one that was tested) with its effect, 95% interval and what the "
        "interval is over. Each trait's findings.json holds every sub-test."
    )
    report = write_page(out / REPORT_FILE, "defense_interp: defences across traits", head,
                        [("Claims × traits", None, caption, table)])  # fmt: skip
    return TraitsResult(studies, table, report)
