"""Claim 6: IP acts as a context-induced shift of the residual stream (H1–H5 of `docs/study.md`),
tested on a `Comparison` and the IP measurements of `study.prompt_shift` (`IPMeasurements`: the
prompt's shift of the base model, H1 and H4, and the untrained model's expression per test-time
prompt, H5). The trained runs carry their own test-time expression with each prompt as extra scores
`"{score}|{prompt name}"` of `run.expression["after"]` (added by the study's analysis)."""

from __future__ import annotations

from defense_interp.claims import NOT_TESTED, combine, sub_test
from defense_interp.metrics.stats import Estimate, paired_difference
from defense_interp.study.claims.common import Claim, ClaimResult
from defense_interp.study.compare import Comparison, expression_at
from defense_interp.study.prompt_shift import IPMeasurements, conditional_gap, untrained_gap
from defense_interp.study.roles import Roles
from defense_interp.training import GradientProbe, Run

__all__ = ["CLAIM"]

RULE = """
**Claim 6 (IP as a context-induced shift; studies with the IP measurements).** Counted
sub-tests: (H1) IP's effective α `⟨s_L, v̂_L⟩/‖v_L‖` at the axes layer > 0, the shift `s_L` measured
on the base model over the training examples' response tokens (interval over examples); (H2) the full
replay is closer to IP than its on-axis part: `cos(Δ^full_L, Δ^IP_L) − cos(Δ^on_L, Δ^IP_L)` > 0 from the
probes (Δ = ḡ − ḡ^base at the axes layer); the full replay lowers the loss on the trait data before
training (its training-time loss minus the baseline's, same batches) < 0; the full replay reduces the
trait (projection after training minus the baseline's) < 0; (H5) IP's conditional gap is larger than
the baseline's: `(projection with the IP prompt at test time − without)` of the IP run minus that of
the baseline run, after training, > 0. Reproduced when every counted sub-test is. Context, not
counted: the on- and off-axis replays; the paraphrased and placebo prompts; PPS's conditional gap;
IP's gap after training minus the untrained model's; H3 (per band of knocked-out layers, the share
of IP's loss drop and of its Δ that remains) and H4 (Spearman's ρ between each response token's loss
change under the prompt and its projection on v̂_L). With a judge (`--judge`), H5 gains a counted
mirror: the same gaps measured with the judge's mean 0–100 score of answers sampled with and
without the IP prompt (as in the judge sub-tests of claims 4 and 5).
"""

_COUNTED = (  # (name, statistic, prediction) of the counted sub-tests, as a design without them reports them
    ("H1: IP's effective α > 0", "⟨s_L, v̂_L⟩/‖v_L‖ at {hp}, the IP prompt's shift (base model)", "> 0"),
    (
        "H2: full replay closer to IP than its on-axis part",
        "cos(Δ^full_L, Δ^IP_L) − cos(Δ^on_L, Δ^IP_L) at {hp}",
        "> 0",
    ),
    ("H2: replay lowers the loss", "response-token loss before training, replay on − baseline", "< 0"),
    ("H2: replay reduces the trait", "projection score at {hp}: full replay after − baseline after", "< 0"),
    ("H5: IP's conditional gap exceeds the baseline's", "projection score at {hp}: IP's gap − the baseline's", "> 0"),
)


def _growth(cmp: Comparison, label: str | None, ip: IPMeasurements) -> Estimate | None:
    """IP's gap after training minus the untrained model's gap (paired by question; pooled over seeds)."""
    before = untrained_gap(ip, "ip")
    if label is None or before is None:
        return None

    def get(run: Run) -> Estimate | None:
        after = conditional_gap(run, "ip")
        return None if after is None else paired_difference(after, before, over="eval questions (paired)", keep=True)

    return cmp.pooled(label, get)


def _test(cmp: Comparison, r: Roles, hp: str, ip: IPMeasurements | None) -> ClaimResult:
    """Claim 6 by its rule (`RULE`); not tested without the IP measurements."""
    rule = "all counted sub-tests (claim 6's rule)"
    if ip is None:
        miss = "the IP measurements and the replays of the prompt's shift"
        untested = [sub_test(n, s.format(hp=hp), None, p, needs=[None], missing=miss) for n, s, p in _COUNTED]
        return rule, untested, NOT_TESTED
    full, on, off = (r.replays.get(p) for p in ("full", "on_axis", "off_axis"))
    label = {k: cmp.condition(k).label for k in (full, on, off, r.ip) if k is not None}

    def axes_index(p: GradientProbe) -> int:
        return p.layers.index(cmp.axes_layer)

    def delta_cos(a: str | None) -> Estimate | None:
        if a is None or r.ip is None:
            return None
        return cmp.probe_pooled((label[a], label[r.ip]), lambda p, i, j: float(p.delta_cosine()[axes_index(p), i, j]))

    def closer() -> Estimate | None:
        if full is None or on is None or r.ip is None:
            return None

        def fn(p: GradientProbe, f: int, o: int, i: int) -> float:
            c = p.delta_cosine()[axes_index(p)]
            return float(c[f, i] - c[o, i])

        return cmp.probe_pooled((label[full], label[on], label[r.ip]), fn)

    start_gap = cmp.start_loss_gap

    def after_minus_baseline(run: str | None) -> Estimate | None:
        if run is None or r.baseline is None:
            return None
        return cmp.paired(run, expression_at("after"), r.baseline)

    def gap_vs_baseline(run: str | None, name: str, score: str = "projection") -> Estimate | None:
        if run is None or r.baseline is None:
            return None
        return cmp.paired(run, lambda x: conditional_gap(x, name, score), r.baseline)

    proj = f"projection score at {hp}, test time"
    dcos = f"cosine of Δ = ḡ − ḡ^base at {hp} (probes)"
    tests = [
        sub_test(
            "H1: IP's effective α > 0",
            f"⟨s_L, v̂_L⟩/‖v_L‖ at {hp}, s_L the IP prompt's shift of response-token activations (base model)",
            ip.shift.at_axes_layer("effective_alpha"),
            "> 0",
        ),
        sub_test(
            "H2: full replay closer to IP than its on-axis part",
            f"{dcos}: full − on-axis",
            closer(),
            "> 0",
            missing="probes holding the replays and IP",
        ),
        sub_test(
            "H2: replay lowers the loss",
            "response-token loss before training, replay on − baseline",
            start_gap(full),
            "< 0",
            missing="a full replay run",
        ),
        sub_test(
            "H2: replay reduces the trait",
            f"{proj}: full replay after − baseline after",
            after_minus_baseline(full),
            "< 0",
            missing="a full replay run",
        ),
        sub_test(
            "H5: IP's conditional gap exceeds the baseline's",
            f"{proj}: (with the IP prompt − without) of IP after − the same of the baseline after",
            gap_vs_baseline(r.ip, "ip"),
            "> 0",
            missing="conditional expression of IP and baseline runs",
        ),
    ]
    if any("judge|ip" in run.expression.get("after", {}) for run in cmp.runs):
        tests.append(
            sub_test(
                "H5: IP's conditional gap exceeds the baseline's (judge)",
                "judge score (0–100, sampled answers), test time: the same gaps with the IP prompt",
                gap_vs_baseline(r.ip, "ip", "judge"),
                "> 0",
                missing="judge scores of IP and baseline runs sampled with the IP prompt",
            )
        )
    context = [
        ("H1: cos(s_L, v_L)", f"cosine at {hp}", ip.shift.at_axes_layer("cosine"), "> 0"),
        ("H2: full replay vs IP", dcos, delta_cos(full), "> 0"),
        ("H2: on-axis replay vs IP", dcos, delta_cos(on), "> 0"),
        ("H2: off-axis replay vs IP", dcos, delta_cos(off), "> 0"),
        ("H2: on-axis replay lowers the loss", "the same, on-axis replay", start_gap(on), "< 0"),
        ("H2: off-axis replay lowers the loss", "the same, off-axis replay", start_gap(off), "< 0"),
        ("H2: on-axis replay reduces the trait", f"{proj}: on-axis replay − baseline", after_minus_baseline(on), "< 0"),
        (
            "H2: off-axis replay reduces the trait",
            f"{proj}: off-axis replay − baseline",
            after_minus_baseline(off),
            "< 0",
        ),
        (
            "H4: loss drop on trait-laden tokens",
            f"Spearman ρ per example between each response token's loss change under the prompt and ⟨h_L, v̂_L⟩ at {hp}",
            ip.shift.rank_correlation,
            "< 0",
        ),
        ("H4: loss change per token", "nats, with the prompt − without, base model", ip.shift.loss_change, "< 0"),
        *(
            (
                f"H5: conditional gap with the {name} prompt, IP vs baseline",
                f"{proj}: as above with '{name}'",
                gap_vs_baseline(r.ip, name),
                "> 0",
            )
            for name in ip.prompts
            if name != "ip"
        ),
        (
            "H5: PPS's conditional gap vs the baseline's",
            f"{proj}: as above, strongest-α PPS",
            gap_vs_baseline(r.pps, "ip"),
            "> 0",
        ),
        (
            "H5: IP's gap grows with training",
            f"{proj}: IP's gap after training − the untrained model's gap",
            _growth(cmp, r.ip, ip),
            "> 0",
        ),
    ]
    tests += [sub_test(n, s, e, pred, counted=False) for n, s, e, pred in context]
    return rule, tests, combine(tests)


CLAIM = Claim(
    number=6,
    title="IP as a context-induced shift",
    text="IP acts as a context-induced shift of the residual stream: its prompt shifts the answers' "
    "activations along the trait axis, replaying that shift reproduces IP, and the IP-trained model "
    "has learnt to rely on the prompt.",
    tested_by="the IP measurements and replays: --preset full",
    test=_test,
    rule=RULE,
)
