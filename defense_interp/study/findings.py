"""`assess(cmp)`: the five claims of DESIGN §1 tested on a `Comparison`, one function per claim.

Each claim function finds its conditions by role (`study.roles`), measures its sub-tests as
`Estimate`s and returns its rule, sub-tests and verdict; the verdict rules are in `study.verdicts`
(and written into every `findings.json`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from defense_interp.metrics.stats import Estimate
from defense_interp.provenance import __version__
from defense_interp.study.compare import Comparison, expression_at
from defense_interp.study.mechanism_claim import Mechanism, mechanism_claim
from defense_interp.study.roles import Roles
from defense_interp.study.verdicts import CLAIMS, Finding, Findings, SubTest, combine, sub_test
from defense_interp.training import GradientProbe
from defense_interp.types import hook_name

__all__ = ["assess"]


def _after_minus(cmp: Comparison, label: str | None, other: str | None, score: str = "projection") -> Estimate | None:
    """A score after training (projection by default): `label` minus `other`, paired by seed and question."""
    if label is None or other is None:
        return None
    return cmp.paired(label, expression_at("after", score), other)


def _change(cmp: Comparison, label: str | None, score: str = "projection") -> Estimate | None:
    """A score after − before training of one condition (paired by seed and question)."""
    if label is None:
        return None
    return cmp.paired(label, expression_at("after", score), label, expression_at("before", score))


_JUDGE = "judge score (0–100, mean over questions of the mean over sampled answers), test time"


def _judged(cmp: Comparison) -> bool:
    return any("judge" in r.expression.get("after", {}) for r in cmp.runs)


def _judge_mirrors(
    cmp: Comparison, tests: list[SubTest], specs: list[tuple[str, Callable[[str], Any]]]
) -> list[SubTest]:
    """With judge scores in the runs: `tests` plus, for each `(name, effect(score))` of `specs`,
    the same sub-test measured with the judge score (counted: JUDGE_RULE)."""
    if not _judged(cmp):
        return tests
    by_name = {t.name: t for t in tests}
    return tests + [
        sub_test(
            f"{name} (judge)",
            _JUDGE + by_name[name].statistic.split(":", 1)[-1],
            effect("judge"),
            by_name[name].prediction,
            counted=by_name[name].counted,
            missing="judge scores of these runs",
        )
        for name, effect in specs
    ]


def _probe_stat(
    cmp: Comparison, need: tuple[str, ...], fn: Callable[..., float], *, step: int | None = None
) -> Estimate | None:
    """`ProbeSummaries.probe_pooled` of the conditions of the runs `need` (a run's condition is found
    in a probe by the condition's own label, whatever the run is named)."""
    return cmp.probe_pooled(tuple(cmp.condition(run).label for run in need), fn, step=step)


Claim = tuple[str, list[SubTest], str]  # (rule, sub-tests, verdict)


def _pressure_flip(cmp: Comparison, r: Roles, hp: str) -> Claim:
    """Claim 1: baseline pressure amplifying, strongest-α PPS attenuating (runs); probes at step 0 as context."""
    li = cmp.layers.index(cmp.axes_layer) if cmp.axes_layer in cmp.layers else None

    def pn(label: str | None) -> Estimate | None:
        return None if label is None or li is None else cmp.at_axes_layer("pressure_norm", label)

    def pn_step0(label: str | None) -> Estimate | None:  # the counterfactual view: same batch, same untrained weights
        if label is None or li is None:
            return None
        return _probe_stat(
            cmp, (label,), lambda p, i: float(p.pressure_norm[i, p.layers.index(cmp.axes_layer)]), step=0
        )

    tests = [
        sub_test(
            "baseline pressure is amplifying",
            f"normalised pressure P/Σ‖g‖ at {hp}, mean over training steps",
            pn(r.baseline),
            "> 0",
            missing="a baseline run",
        ),
        sub_test(
            f"PPS ({r.pps or 'not run'}) pressure is attenuating",
            f"normalised pressure at {hp} under PPS, strongest α",
            pn(r.pps),
            "< 0",
            missing="a PPS run",
        ),
    ]
    tests += [
        sub_test(f"{l} pressure", f"normalised pressure at {hp}", pn(l), "< 0", counted=False)
        for l in r.pps_all
        if l != r.pps
    ]
    tests += [  # pre-registered (CLAIM1_RULE): counted since the IP-mechanism round
        sub_test(
            "baseline pressure at step 0 (probes)",
            f"normalised pressure at {hp}, probe before training",
            pn_step0(r.baseline),
            "> 0",
            missing="probes at step 0",
        ),
        sub_test(
            f"PPS ({r.pps or 'not run'}) pressure at step 0 (probes)",
            "the same under PPS, same batch and weights",
            pn_step0(r.pps),
            "< 0",
            missing="probes at step 0 holding PPS",
        ),
    ]
    return (
        "all counted sub-tests: baseline > 0 and strongest-α PPS < 0, over training (runs) and at step 0 (probes)",
        tests,
        combine(tests),
    )


def _diffuseness(cmp: Comparison, r: Roles, hp: str) -> Claim:
    """Claim 2: IP's difference from baseline is more diffuse than PPS's (probes), by three metrics."""
    measurable = r.ip is not None and r.pps is not None and cmp.axes_layer in cmp.layers
    ip, pps = r.ip or "", r.pps or ""

    def at_axes(p: GradientProbe) -> int:
        return p.layers.index(cmp.axes_layer)

    def ip_minus_pps(fn: Callable[[GradientProbe, int], float]) -> Estimate | None:
        if not measurable:
            return None
        return _probe_stat(cmp, (ip, pps), lambda p, i, j: fn(p, i) - fn(p, j))

    miss = "probes holding baseline, IP and PPS"
    tests = [
        sub_test(
            "IP − PPS: spread of ‖Δ_l‖² over layers",
            "normalised entropy over layers of ‖ḡ^c_l − ḡ^base_l‖² (probes)",
            ip_minus_pps(lambda p, i: float(p.delta_layer_entropy()[i])),
            "> 0",
            missing=miss,
        ),
        sub_test(
            "IP − PPS: participation ratio of Δ_L",
            f"dimension participation ratio of Δ at {hp} (probes)",
            ip_minus_pps(lambda p, i: float(p.participation(of="delta")[i, at_axes(p)])),
            "> 0",
            missing=miss,
        ),
        sub_test(
            "IP − PPS: off-axis share of Δ_L",
            f"1 − cos²(Δ_L, v̂_L) at {hp} (probes)",
            ip_minus_pps(lambda p, i: 1.0 - float(p.delta_axis_cosine()[i, at_axes(p)]) ** 2),
            "> 0",
            missing=miss,
        ),
    ]
    cos_est = (
        None
        if not measurable
        else _probe_stat(cmp, (ip, pps), lambda p, i, j: float(p.delta_cosine()[at_axes(p), i, j]))
    )
    tests.append(
        sub_test(
            "cos(Δ^IP_L, Δ^PPS_L): the gradients differ",
            f"cosine of the differences from baseline at {hp} (probes)",
            cos_est,
            "< 1",
            counted=False,
        )
    )
    n_rep = sum(t.verdict == "reproduced" for t in tests if t.counted)
    n_not = sum(t.verdict == "not reproduced" for t in tests if t.counted)
    verdict = "reproduced" if n_rep >= 2 and n_not == 0 else "not reproduced" if n_not >= 2 else "inconclusive"
    return "≥ 2 of the 3 diffuseness metrics significantly higher for IP and none lower", tests, verdict


def _loss_explained(cmp: Comparison, r: Roles, hp: str) -> Claim:
    """Claim 3: the IP prompt lowers the loss on trait data at the start of training (PPS as context)."""

    start_gap = cmp.start_loss_gap
    tests = [
        sub_test(
            "IP lowers the loss on trait data",
            "response-token loss before training with the IP prompt in place minus the baseline's, same batches",
            start_gap(r.ip),
            "< 0",
            missing="IP and baseline runs",
        ),
        sub_test(
            "PPS (strongest α) loss change", "the same with PPS steering on", start_gap(r.pps), "< 0", counted=False
        ),
    ]
    return "the IP sub-test (PPS is reported as context: the claim says it need not)", tests, combine(tests)


def _behaviour(cmp: Comparison, r: Roles, hp: str) -> Claim:
    """Claim 4: both prevent the trait; PPS removes a pre-existing trait, IP does not."""
    proj = f"projection score at {hp}, test time"
    pre = sub_test(
        "baseline learns the trait (precondition)",
        f"{proj}: after − before training",
        _change(cmp, r.baseline),
        "> 0",
        counted=False,
        missing="a baseline run",
    )
    tests = [
        pre,
        sub_test(
            "PPS prevents acquisition",
            f"{proj}: PPS after − baseline after",
            _after_minus(cmp, r.pps, r.baseline),
            "< 0",
            missing="PPS and baseline runs",
        ),
        sub_test(
            "IP prevents acquisition",
            f"{proj}: IP after − baseline after",
            _after_minus(cmp, r.ip, r.baseline),
            "< 0",
            missing="IP and baseline runs",
        ),
        sub_test(
            "PPS removes a pre-existing trait",
            f"{proj}: two-stage PPS after − its start (the baseline-trained model)",
            _change(cmp, r.pps_two_stage),
            "< 0",
            missing="a two-stage PPS run (train(init=baseline run))",
        ),
        sub_test(
            "IP does not remove a pre-existing trait",
            f"{proj}: two-stage IP after − its start",
            _change(cmp, r.ip_two_stage),
            "not < 0",
            missing="a two-stage IP run",
        ),
    ]
    tests = _judge_mirrors(
        cmp,
        tests,
        [
            ("baseline learns the trait (precondition)", lambda s: _change(cmp, r.baseline, s)),
            ("PPS prevents acquisition", lambda s: _after_minus(cmp, r.pps, r.baseline, s)),
            ("IP prevents acquisition", lambda s: _after_minus(cmp, r.ip, r.baseline, s)),
            ("PPS removes a pre-existing trait", lambda s: _change(cmp, r.pps_two_stage, s)),
            ("IP does not remove a pre-existing trait", lambda s: _change(cmp, r.ip_two_stage, s)),
        ],
    )
    verdict = "inconclusive" if pre.verdict != "reproduced" else combine(tests)
    return "all counted sub-tests; inconclusive when the baseline does not learn the trait", tests, verdict


def _causality(cmp: Comparison, r: Roles, hp: str) -> Claim:
    """Claim 5: the attenuating gradient edit blocks learning; amplifying learns more than attenuating."""
    proj = f"projection score at {hp}, test time"
    edit = r.edits
    tests = [
        sub_test(
            "attenuating edit blocks learning",
            f"{proj}: edit_attenuate after − baseline after",
            _after_minus(cmp, edit.get("attenuate"), r.baseline),
            "< 0",
            missing="an attenuate GradientEdit run",
        ),
        sub_test(
            "amplifying edit learns more than attenuating",
            f"{proj}: edit_amplify after − edit_attenuate after",
            _after_minus(cmp, edit.get("amplify"), edit.get("attenuate")),
            "> 0",
            missing="amplify and attenuate runs",
        ),
        sub_test(
            "neutralizing edit vs baseline",
            f"{proj}: edit_neutralize after − baseline after",
            _after_minus(cmp, edit.get("neutralize"), r.baseline),
            "< 0",
            counted=False,
        ),
    ]
    tests = _judge_mirrors(
        cmp,
        tests,
        [
            ("attenuating edit blocks learning", lambda s: _after_minus(cmp, edit.get("attenuate"), r.baseline, s)),
            (
                "amplifying edit learns more than attenuating",
                lambda s: _after_minus(cmp, edit.get("amplify"), edit.get("attenuate"), s),
            ),
            ("neutralizing edit vs baseline", lambda s: _after_minus(cmp, edit.get("neutralize"), r.baseline, s)),
        ],
    )
    return "both counted sub-tests", tests, combine(tests)


_CLAIM_TESTS = (_pressure_flip, _diffuseness, _loss_explained, _behaviour, _causality)


def _judge_provenance(cmp: Comparison) -> dict[str, Any]:
    """Which judge scored the runs, as the runs record it."""
    return dict(next(r.provenance["judge"] for r in cmp.runs if "judge" in r.provenance))


def assess(cmp: Comparison, *, mechanism: Mechanism | None = None) -> Findings:
    """Test the five claims of DESIGN §1 on `cmp` by the rules of `study.verdicts` (its module
    docstring); with `mechanism` (the IP-mechanism measurements), claim 6 as well (`MECHANISM_RULE`)."""
    roles = cmp.roles
    hp = hook_name(cmp.axes_layer, cmp.point)
    claims: list[Callable[..., Claim]] = list(_CLAIM_TESTS)
    if mechanism is not None:
        claims.append(lambda c, r, h: mechanism_claim(c, r, h, mechanism))
    findings = []
    for i, claim in enumerate(claims, 1):
        rule, tests, verdict = claim(cmp, roles, hp)
        title, text = CLAIMS[i]
        findings.append(Finding(claim=i, title=title, text=text, verdict=verdict, rule=rule, tests=tuple(tests)))
    return Findings(
        tuple(findings),
        {
            "package_version": __version__,
            "hook_point": hp,
            "labels": list(cmp.labels),
            "seeds": cmp.seeds,
            "strongest_pps": roles.pps,
            "torch_version": torch.__version__,
            **({"judge": _judge_provenance(cmp)} if _judged(cmp) else {}),
        },
    )
