"""The five claims of DESIGN §1, each tested on the data of a `Comparison` by a fixed rule.

`assess(cmp)` returns `Findings`: one `Finding` per claim with its sub-tests. Each sub-test is an
`Estimate` of an effect (with its interval and what the interval is over) and a predicted sign.
Nothing is written by hand; the verdicts follow these rules:

**Sub-test.** For a prediction "> 0" the test is *reproduced* when the whole 95% interval is
above 0, *not reproduced* when it is wholly below 0, *inconclusive* when it contains 0 (or the
effect could not be measured: a needed condition was not run, or there is one sample). "< 0" is
the mirror image. An absence prediction "not < 0" (e.g. "IP does not remove the trait") is
reproduced unless the interval is wholly below 0. Context tests are reported but not counted.

**Claim.** Unless a claim says otherwise: *reproduced* when every counted sub-test is reproduced,
*not reproduced* when any is not reproduced, else *inconclusive*. Claim 2 (diffuseness) counts
three metrics: reproduced when at least two say "IP more diffuse" and none says the opposite;
not reproduced when at least two say the opposite. Claim 4 is inconclusive when the baseline does
not learn the trait (its precondition).

Intervals are over seeds when the study has several (the per-seed values are paired with the
baseline of the same seed), else over training steps, eval questions, batches or probes of the
single seed, as each Estimate says. PPS claims use the strongest α trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from defense_interp import __version__
from defense_interp.compare import Comparison
from defense_interp.io import write_json
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.probe import GradientProbe

__all__ = ["assess", "Findings", "Finding", "SubTest", "VERDICTS", "CLAIMS"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
CLAIMS = {
    1: ("Pressure flip", "PPS flips the gradient pressure along the trait axis from amplifying (baseline) "
                         "to attenuating once α is large enough."),
    2: ("IP gradient is more diffuse", "IP has a different, more diffuse gradient signature than PPS."),
    3: ("Loss explained away", "IP lowers the next-token loss on the trait data while its prompt is in place; "
                               "PPS need not."),
    4: ("Behaviour", "Both methods prevent the trait from being acquired; PPS also removes a trait the model "
                     "already has, IP does not."),
    5: ("Causality of the gradient along the axis", "Forcing the gradient along the trait axis to attenuate "
        "stops the trait from being learnt; forcing it to amplify makes it learnt."),
}


@dataclass(frozen=True)
class SubTest:
    """One measured effect with its predicted sign and verdict."""

    name: str
    statistic: str
    effect: Estimate | None
    prediction: str  # "> 0", "< 0" or "not < 0"
    verdict: str
    counted: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        e = self.effect
        return {"name": self.name, "statistic": self.statistic, "prediction": self.prediction,
                "effect": None if e is None else e.mean,
                "interval": None if e is None else [e.low, e.high],
                "test": None if e is None else f"{e.method} over {e.n} {e.over}; predicted {self.prediction}",
                "verdict": self.verdict, "counted": self.counted, "note": self.note}


@dataclass(frozen=True)
class Finding:
    claim: int
    title: str
    text: str
    verdict: str
    rule: str
    tests: tuple[SubTest, ...]

    @property
    def primary(self) -> SubTest:
        return next((t for t in self.tests if t.counted), self.tests[0])

    def to_dict(self) -> dict[str, Any]:
        p = self.primary.to_dict()
        return {"claim": self.claim, "title": self.title, "text": self.text, "verdict": self.verdict,
                "rule": self.rule, "measured_effect": p["effect"], "interval": p["interval"], "test": p["test"],
                "statistic": p["statistic"], "tests": [t.to_dict() for t in self.tests]}


@dataclass(frozen=True)
class Findings:
    findings: tuple[Finding, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "rules": __doc__, "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict())
        return path


def _verdict(effect: Estimate | None, prediction: str) -> str:
    """Verdict of a prediction "> c", "< c" or "not < c" (c a number) from a 95% interval."""
    if effect is None or math.isnan(effect.low) or math.isnan(effect.high):
        return "inconclusive"
    op, c = prediction.rsplit(" ", 1)
    c = float(c)
    if op == ">":
        return "reproduced" if effect.low > c else "not reproduced" if effect.high < c else "inconclusive"
    if op == "<":
        return "reproduced" if effect.high < c else "not reproduced" if effect.low > c else "inconclusive"
    if op == "not <":
        return "not reproduced" if effect.high < c else "reproduced"
    raise ValueError(f"unknown prediction {prediction!r}")


def _test(name: str, statistic: str, effect: Estimate | None, prediction: str, *, counted: bool = True,
          missing: str = "") -> SubTest:
    note = f"not measured: {missing}" if effect is None and missing else ""
    return SubTest(name, statistic, effect, prediction, _verdict(effect, prediction), counted, note)


def _combine(tests: list[SubTest]) -> str:
    counted = [t.verdict for t in tests if t.counted]
    if counted and all(v == "reproduced" for v in counted):
        return "reproduced"
    return "not reproduced" if "not reproduced" in counted else "inconclusive"


class _Roles:
    """Which condition of the comparison plays which part (by the runs' condition records)."""

    def __init__(self, cmp: Comparison):
        self.cmp = cmp
        conds = {l: cmp.condition(l) for l in cmp.labels}
        fresh = {l: c for l, c in conds.items() if not c.get("init")}
        self.base = cmp.baseline  # compare() finds the plain baseline when none is given
        pps = [(float(c["coef"]), l) for l, c in fresh.items() if c.get("name") == "pps" and not isinstance(c.get("layer"), list)]
        self.pps = max(pps)[1] if pps else None
        self.pps_all = [l for _, l in sorted(pps)]
        self.ip = next((l for l, c in fresh.items() if c.get("name") == "ip"), None)
        self.pps2 = next((l for l, c in conds.items() if c.get("init") and c.get("name") == "pps"), None)
        self.ip2 = next((l for l, c in conds.items() if c.get("init") and c.get("name") == "ip"), None)
        self.edit = {c.get("mode"): l for l, c in fresh.items() if c.get("name") == "gradient_edit"}

    def after_minus(self, label: str | None, other: str | None) -> Estimate | None:
        if label is None or other is None:
            return None
        return self.cmp.paired(label, lambda r: r.expression.get("after", {}).get("projection"), other)

    def change(self, label: str | None) -> Estimate | None:
        """after − before of one condition (paired by seed and question)."""
        if label is None:
            return None
        return self.cmp.paired(label, lambda r: r.expression.get("after", {}).get("projection"), label,
                               lambda r: r.expression.get("before", {}).get("projection"))


def _probe_stat(cmp: Comparison, need: tuple[str, ...], fn: Callable[[GradientProbe], float], *,
                step: int | None = None) -> Estimate | None:
    """`fn(probe)` on every probe holding the labels `need` and a baseline (only probes taken at
    `step`, if given): mean over each seed's probes, then a t-interval over seeds (or over the one
    seed's probes)."""
    by_seed: dict[int, list[float]] = {}
    for seed, p in cmp.probes():
        if step is not None and p.step != step:
            continue
        if all(l in p.labels for l in need) and "baseline" in [c.get("name") for c in p.conditions]:
            by_seed.setdefault(seed, []).append(fn(p))
    if not by_seed:
        return None
    if len(by_seed) >= 2:
        return mean_ci([sum(v) / len(v) for v in by_seed.values()], over="seeds (mean over each seed's probes)")
    return mean_ci(next(iter(by_seed.values())), over="probes (training steps, one seed)")


def assess(cmp: Comparison) -> Findings:
    """Test the five claims of DESIGN §1 on `cmp` by the rules of the module docstring."""
    r = _Roles(cmp)
    hp = f"blocks.{cmp.axes_layer}.hook_{cmp.point}"
    li = cmp.layers.index(cmp.axes_layer) if cmp.axes_layer in cmp.layers else None
    out = []

    # 1. pressure flip
    def pn(label):
        return None if label is None or li is None else cmp.at_axes_layer("pressure_norm", label)
    t1 = [_test("baseline pressure is amplifying", f"normalised pressure P/Σ‖g‖ at {hp}, mean over training steps",
                pn(r.base), "> 0", missing="a baseline run"),
          _test(f"PPS ({r.pps}) pressure is attenuating", f"normalised pressure at {hp} under PPS, strongest α",
                pn(r.pps), "< 0", missing="a PPS run")]
    t1 += [_test(f"{l} pressure", f"normalised pressure at {hp}", pn(l), "< 0", counted=False)
           for l in r.pps_all if l != r.pps]

    def pn_step0(label):  # the counterfactual view: same batch, same untrained weights
        if label is None or li is None:
            return None
        return _probe_stat(cmp, (label,), lambda p: float(p.pressure_norm[p.index(label), p.layers.index(cmp.axes_layer)]),
                           step=0)
    t1 += [_test("baseline pressure at step 0 (probes)", f"normalised pressure at {hp}, probe before training",
                 pn_step0(r.base), "> 0", counted=False),
           _test(f"PPS ({r.pps}) pressure at step 0 (probes)", "the same under PPS, same batch and weights",
                 pn_step0(r.pps), "< 0", counted=False)]
    out.append(("all counted sub-tests: baseline > 0 and strongest-α PPS < 0", t1, _combine(t1)))

    # 2. diffuseness of IP vs PPS (probe differences from baseline)
    def entropy(p, i):
        return float(p.delta_layer_entropy()[i])

    def pr(p, i):
        return float(p.participation(of="delta")[i, p.layers.index(cmp.axes_layer)])

    def off_axis(p, i):
        return 1.0 - float(p.delta_axis_cosine()[i, p.layers.index(cmp.axes_layer)]) ** 2

    def ip_minus_pps(fn):
        if r.ip is None or r.pps is None or li is None:
            return None
        return _probe_stat(cmp, (r.ip, r.pps), lambda p: fn(p, p.index(r.ip)) - fn(p, p.index(r.pps)))

    miss = "probes holding baseline, IP and PPS"
    t2 = [_test("IP − PPS: spread of ‖Δ_l‖² over layers", "normalised entropy over layers of ‖ḡ^c_l − ḡ^base_l‖² (probes)",
                ip_minus_pps(entropy), "> 0", missing=miss),
          _test("IP − PPS: participation ratio of Δ_L", f"dimension participation ratio of Δ at {hp} (probes)",
                ip_minus_pps(pr), "> 0", missing=miss),
          _test("IP − PPS: off-axis share of Δ_L", f"1 − cos²(Δ_L, v̂_L) at {hp} (probes)",
                ip_minus_pps(off_axis), "> 0", missing=miss)]
    cos_est = None if r.ip is None or r.pps is None or li is None else _probe_stat(
        cmp, (r.ip, r.pps), lambda p: float(p.delta_cosine()[p.layers.index(cmp.axes_layer), p.index(r.ip), p.index(r.pps)]))
    t2.append(_test("cos(Δ^IP_L, Δ^PPS_L): the gradients differ", f"cosine of the differences from baseline at {hp} "
                    "(probes)", cos_est, "< 1", counted=False))
    n_rep = sum(t.verdict == "reproduced" for t in t2 if t.counted)
    n_not = sum(t.verdict == "not reproduced" for t in t2 if t.counted)
    v2 = "reproduced" if n_rep >= 2 and n_not == 0 else "not reproduced" if n_not >= 2 else "inconclusive"
    out.append(("≥ 2 of the 3 diffuseness metrics significantly higher for IP and none lower", t2, v2))

    # 3. loss explained away
    def start_gap(label):
        if label is None or r.base is None:
            return None
        return cmp.paired(label, lambda x: x.loss_table.get("start", {}).get("train_time"), r.base,
                          lambda x: x.loss_table.get("start", {}).get("test_time"))
    t3 = [_test("IP lowers the loss on trait data", "response-token loss before training with the IP prompt in "
                "place minus the baseline's, same batches", start_gap(r.ip), "< 0", missing="IP and baseline runs"),
          _test("PPS (strongest α) loss change", "the same with PPS steering on", start_gap(r.pps), "< 0", counted=False)]
    out.append(("the IP sub-test (PPS is reported as context: the claim says it need not)", t3, _combine(t3)))

    # 4. behaviour
    proj = f"projection score at {hp}, test time"
    pre = _test("baseline learns the trait (precondition)", f"{proj}: after − before training", r.change(r.base),
                "> 0", counted=False, missing="a baseline run")
    t4 = [pre,
          _test("PPS prevents acquisition", f"{proj}: PPS after − baseline after", r.after_minus(r.pps, r.base), "< 0",
                missing="PPS and baseline runs"),
          _test("IP prevents acquisition", f"{proj}: IP after − baseline after", r.after_minus(r.ip, r.base), "< 0",
                missing="IP and baseline runs"),
          _test("PPS removes a pre-existing trait", f"{proj}: two-stage PPS after − its start (the baseline-trained model)",
                r.change(r.pps2), "< 0", missing="a two-stage PPS run (train(init=baseline run))"),
          _test("IP does not remove a pre-existing trait", f"{proj}: two-stage IP after − its start",
                r.change(r.ip2), "not < 0", missing="a two-stage IP run")]
    v4 = "inconclusive" if pre.verdict != "reproduced" else _combine(t4)
    out.append(("all counted sub-tests; inconclusive when the baseline does not learn the trait", t4, v4))

    # 5. causality
    t5 = [_test("attenuating edit blocks learning", f"{proj}: edit_attenuate after − baseline after",
                r.after_minus(r.edit.get("attenuate"), r.base), "< 0", missing="an attenuate GradientEdit run"),
          _test("amplifying edit learns more than attenuating", f"{proj}: edit_amplify after − edit_attenuate after",
                r.after_minus(r.edit.get("amplify"), r.edit.get("attenuate")), "> 0", missing="amplify and attenuate runs"),
          _test("neutralizing edit vs baseline", f"{proj}: edit_neutralize after − baseline after",
                r.after_minus(r.edit.get("neutralize"), r.base), "< 0", counted=False)]
    out.append(("both counted sub-tests", t5, _combine(t5)))

    findings = tuple(Finding(i, *CLAIMS[i], verdict, rule, tuple(tests))
                     for i, (rule, tests, verdict) in enumerate(out, 1))
    return Findings(findings, {"package_version": __version__, "hook_point": hp, "labels": list(cmp.labels),
                               "seeds": cmp.seeds, "strongest_pps": r.pps, "torch_version": torch.__version__})
