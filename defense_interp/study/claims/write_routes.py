"""Claim 7: PPS's counter-update is written by attention (write routes, `study.write_routes`).

Counted, all on the eval text set (the trait's eval questions with the untrained model's answers,
teacher-forced) at the axes layer, paired by seed:

* (a) the strongest-α PPS's ΔY is below the baseline's;
* (b1) the attention part of ΔY(PPS) − ΔY(baseline) is negative;
* (b2) it is larger in magnitude than the MLP part (`|Δattn| − |Δmlp| > 0`, per seed);
* (c) reverting PPS's attention parameters restores more of the trait (test-time projection score)
  than reverting its MLP parameters.

Context: (a) and (b1) on the training texts; IP's and the attenuating edit's parts against the
baseline; whether PPS's pressure fades (mean |X| over the last third of steps minus the first);
and a linear-schedule PPS against constant PPS at the same final α (trait after training, loss on
trait-free answers).
"""

from __future__ import annotations

import math

from defense_interp.claims import combine, sub_test
from defense_interp.metrics.dynamics import phases
from defense_interp.metrics.stats import Estimate, mean_ci
from defense_interp.study.claims.common import Claim, ClaimResult, after_minus
from defense_interp.study.compare import Comparison, expression_at
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.study.roles import Roles

__all__ = ["CLAIM"]

_RULE = """
**Claim 7 (write routes).** Decided before it was run on the bundled model. Its four counted
sub-tests — (a) strongest-α PPS's ΔY below the baseline's; (b1) the attention part of ΔY(PPS) −
ΔY(baseline) below 0; (b2) that part larger in magnitude than the MLP part; (c) reverting PPS's
attention parameters restores more of the trait than reverting its MLP parameters — follow the
general rule, all on the eval texts at the axes layer, paired by seed. (b2) with one seed has no
interval and is inconclusive. The training-text versions, IP's and the attenuating edit's parts,
the pressure's fading and the linear schedule are context.
"""


def _route(part: str, texts: str = "eval"):
    return expression_at("after", f"route_{part}|{texts}")


def _measured(cmp: Comparison, label: str | None) -> bool:
    return label is not None and all("route_total|eval" in r.expression.get("after", {}) for r in cmp.groups[label])


def _magnitude(cmp: Comparison, pps: str, base: str) -> Estimate | None:
    """Per seed `|Δattn| − |Δmlp|` with `Δ` = PPS's part − the baseline's (means over texts)."""
    mine = {r.seed: r for r in cmp.groups[pps]}
    values = []
    for r in cmp.groups[base]:
        if r.seed not in mine:
            continue
        ests = {w: (_route(w)(mine[r.seed]), _route(w)(r)) for w in ("attn", "mlp")}
        if any(a is None or o is None for a, o in ests.values()):
            return None
        d = {w: a.mean - o.mean for w, (a, o) in ests.items()}
        values.append(abs(d["attn"]) - abs(d["mlp"]))
    if not values:
        return None
    if len(values) == 1:
        return Estimate(values[0], math.nan, math.nan, 1, "one seed (no interval)")
    return mean_ci(values, over="seeds (paired)")


def _fading(cmp: Comparison, label: str | None) -> Estimate | None:
    """Mean |X| over the last third of the steps minus over the first, at the axes layer, over seeds."""
    if label is None or cmp.axes_layer not in cmp.layers:
        return None
    li = cmp.layers.index(cmp.axes_layer)
    values = [phases(r.gradients.pressure[:, li])["late_minus_early"] for r in cmp.groups[label]]
    if len(values) == 1:
        return Estimate(values[0], math.nan, math.nan, 1, "one seed (no interval)")
    return mean_ci(values, over="seeds")


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    base, pps = r.baseline, r.pps
    routed = {label: label if _measured(cmp, label) else None for label in (base, pps, r.ip, r.edits.get("attenuate"))}
    b, p = routed.get(base), routed.get(pps)
    dy = f"ΔY at {hp} (trained − untrained; eval questions with the untrained model's answers, teacher-forced)"
    missing = "write routes of the baseline and the strongest PPS (--preset full)"
    lower = (("(a) PPS lowers the projection its update writes", "total", ""),
             ("(b1) attention writes PPS's counter-update", "attn", "attention part of "))  # fmt: skip
    tests = [
        *(
            sub_test(
                name,
                f"{what}{dy}: strongest PPS − baseline",
                None if p is None or b is None else cmp.paired(p, _route(part), b),
                "< 0",
                needs=[p, b],
                missing=missing,
            )
            for name, part, what in lower
        ),
        sub_test(
            "(b2) the attention part exceeds the MLP part",
            f"|attention part| − |MLP part| of ΔY(PPS) − ΔY(baseline) at {hp}, per seed",
            None if p is None or b is None else _magnitude(cmp, p, b),
            "> 0",
            needs=[p, b],
            missing=missing,
        ),
        sub_test(
            "(c) reverting attention restores more of the trait than reverting the MLP",
            f"projection score at {hp}, test time: PPS with its attention parameters reverted − with its MLP reverted",
            None
            if p is None
            else cmp.paired(
                p, expression_at("after", "projection|revert_attn"), p, expression_at("after", "projection|revert_mlp")
            ),
            "> 0",
            needs=[p],
            missing="PPS's reverts (--preset full)",
        ),
    ]
    train = "ΔY at " + hp + " on the seed's training examples"
    for name, label in (
        ("PPS (training texts)", p),
        ("IP", routed.get(r.ip)),
        ("attenuating edit", routed.get(r.edits.get("attenuate"))),
    ):
        texts = "train" if name.endswith("texts)") else "eval"
        where = train if texts == "train" else dy
        for part, what in (("total", ""), ("attn", "attention part of ")):
            tests.append(
                sub_test(
                    f"{name}: {what or 'total '}ΔY below the baseline's",
                    f"{what}{where}: {label} − baseline",
                    None if label is None or b is None else cmp.paired(label, _route(part, texts), b),
                    "< 0",
                    counted=False,
                    needs=[label, b],
                    missing=f"write routes of {name}",
                )
            )
    tests.append(
        sub_test(
            "PPS's pressure fades",
            f"mean |X| over the last third of steps − over the first third, strongest PPS at {hp}",
            _fading(cmp, pps),
            "< 0",
            counted=False,
            needs=[pps],
            missing="a PPS run",
        )
    )
    strongest = None if pps is None else float(getattr(cmp.condition(pps), "coef", math.nan))
    linear = None if strongest is None else r.scheduled.get(("linear", strongest))
    same_alpha = linear is not None
    for score, statistic in (
        ("projection", f"projection score at {hp}, test time, after training"),
        ("normal_loss", "test-time loss on trait-free answers (normal data), after training"),
    ):
        tests.append(
            sub_test(
                f"linear schedule vs constant PPS: {score.replace('_', ' ')}",
                f"{statistic}: linear-schedule PPS − constant PPS at the same final α",
                after_minus(cmp, linear, pps, score) if same_alpha else None,
                "< 0",
                counted=False,
                needs=[linear if same_alpha else None],
                missing="a linear-schedule PPS at the strongest α (--preset full)",
            )
        )
    return "the four counted sub-tests (a), (b1), (b2), (c)", tests, combine(tests)


CLAIM = Claim(
    number=7,
    title="Where PPS writes its counter-update",
    text="PPS's counter-update is written by attention: the trained model lowers the trait projection "
    "through the blocks' attention outputs more than through their MLPs, and reverting the attention "
    "parameters restores more of the trait than reverting the MLP's.",
    tested_by="write routes: --preset full",
    test=_test,
    rule=_RULE,
)
