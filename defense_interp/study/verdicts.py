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

**Claim 1, pre-registered second test.** The step-0 counterfactual probe (the same batch and the
same untrained weights: baseline normalised pressure > 0 and strongest-α PPS < 0 at the axes layer)
is counted beside the pressures over training: claim 1 is reproduced only when both views agree.
Fixed before it was run on seeds that earlier findings never saw (`--first-seed 3`).

Intervals are over seeds when the study has several (the per-seed values are paired with the
baseline of the same seed), else over training steps, eval questions, batches or probes of the
single seed, as each Estimate says. PPS claims use the strongest α trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defense_interp.io import write_json
from defense_interp.metrics.verdicts import VERDICTS, Finding, SubTest, combine, sub_test, verdict

__all__ = [
    "CLAIMS",
    "JUDGE_RULE",
    "MECHANISM_RULE",
    "VERDICTS",
    "Finding",
    "Findings",
    "SubTest",
    "combine",
    "sub_test",
    "verdict",
]


#: The rule added to the findings of a study run with an LLM judge (`--judge`), decided before any
#: judged study was run.
JUDGE_RULE = """
**Judge sub-tests (studies run with `--judge`).** Claims 4 and 5 gain a mirror of each of their
counted projection sub-tests, measured with the judge's mean 0–100 trait score of sampled answers
(`judges.trait_expression`: per question the mean over its scored answers, then the mean over
questions; paired by seed, else by question) instead of the projection score, with the same
prediction. The mirrors are counted: with a judge, a claim is reproduced only when the projection
and the judge agree. Claim 4's precondition stays the projection's; its judge mirror is reported
as context, like the neutralizing edit's.
"""
#: The rule of claim 6, fixed before any study tested it.
MECHANISM_RULE = """
**Claim 6 (IP as a context-induced shift; studies with the IP-mechanism measurements).** Counted
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


CLAIMS = {
    1: (
        "Pressure flip",
        "PPS flips the gradient pressure along the trait axis from amplifying (baseline) "
        "to attenuating once α is large enough.",
    ),
    2: ("IP gradient is more diffuse", "IP has a different, more diffuse gradient signature than PPS."),
    3: (
        "Loss explained away",
        "IP lowers the next-token loss on the trait data while its prompt is in place; PPS need not.",
    ),
    4: (
        "Behaviour",
        "Both methods prevent the trait from being acquired; PPS also removes a trait the model "
        "already has, IP does not.",
    ),
    5: (
        "Causality of the gradient along the axis",
        "Forcing the gradient along the trait axis to attenuate "
        "stops the trait from being learnt; forcing it to amplify makes it learnt.",
    ),
    6: (
        "IP as a context-induced shift",
        "IP acts as a context-induced shift of the residual stream: its prompt shifts the answers' "
        "activations along the trait axis, replaying that shift reproduces IP, and the IP-trained model "
        "has learnt to rely on the prompt.",
    ),
}


@dataclass(frozen=True)
class Findings:
    findings: tuple[Finding, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rules = __doc__ + (JUDGE_RULE if self.provenance.get("judge") else "")
        rules += MECHANISM_RULE if any(f.claim == 6 for f in self.findings) else ""
        return {"findings": [f.to_dict() for f in self.findings], "rules": rules, "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict())
        return path
