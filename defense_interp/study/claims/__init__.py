"""The seven claims of DESIGN §1 and issue 29, each in its own module and tested on a `Comparison` by a fixed
rule: `assess(cmp)` returns `Findings` (`defense_interp.claims`), one `Finding` per claim.

| claim | module           | tested by                     |
|-------|------------------|-------------------------------|
| 1     | `pressure_flip`  | every preset                  |
| 2     | `diffuseness`    | every preset                  |
| 3     | `loss_explained` | every preset                  |
| 4     | `behaviour`      | `--preset full` (two-stage)   |
| 5     | `causality`      | `--preset full` (edits)       |
| 6     | `ip_shift`       | `--preset full` (IP measured) |
| 7     | `write_routes`   | `--preset full` (write routes) |
"""

from __future__ import annotations

from typing import Any

import torch

from defense_interp.claims import Finding, Findings
from defense_interp.provenance import __version__
from defense_interp.study.claims import (
    behaviour,
    causality,
    diffuseness,
    ip_shift,
    loss_explained,
    pressure_flip,
    write_routes,
)
from defense_interp.study.claims.common import Claim, judged
from defense_interp.study.compare import Comparison
from defense_interp.study.prompt_shift import IPMeasurements
from defense_interp.types import hook_name

__all__ = ["CLAIMS", "JUDGE_RULE", "RULES", "Claim", "assess"]

#: The claims in the order of their numbers.
CLAIMS: tuple[Claim, ...] = tuple(
    m.CLAIM for m in (pressure_flip, diffuseness, loss_explained, behaviour, causality, ip_shift, write_routes)
)

#: The rules every `findings.json` of the study carries (with each claim's own paragraph and, for
#: a judged study, `JUDGE_RULE`).
RULES = """The claims of DESIGN §1, each tested on the data of a `Comparison` by a fixed rule.

`assess(cmp)` returns `Findings`: one `Finding` per claim with its sub-tests. Each sub-test is an
`Estimate` of an effect (with its interval and what the interval is over) and a predicted sign.
Nothing is written by hand; the verdicts follow these rules:

**Sub-test.** For a prediction "> 0" the test is *reproduced* when the whole 95% interval is
above 0, *not reproduced* when it is wholly below 0, *inconclusive* when it contains 0 (or the
effect could not be measured, or there is one sample). "< 0" is the mirror image. An absence
prediction "not < 0" (e.g. "IP does not remove the trait") is reproduced unless the interval is
wholly below 0. A sub-test whose conditions the design did not run is *not tested* (it names what
it needs). Context tests are reported but not counted.

**Claim.** Unless a claim says otherwise: over the counted sub-tests that were tested,
*reproduced* when every one is reproduced, *not reproduced* when any is not reproduced, else
*inconclusive*; *not tested* when none was tested (the finding names the preset that tests it, and
how many counted sub-tests were not tested). Claim 2 (diffuseness) counts three metrics:
reproduced when at least two say "IP more diffuse" and none says the opposite; not reproduced when
at least two say the opposite. Claim 4 is inconclusive when the baseline does not learn the trait
(its precondition).

Intervals are over seeds when the study has several (the per-seed values are paired with the
baseline of the same seed), else over training steps, eval questions, batches or probes of the
single seed, as each Estimate says. PPS claims use the strongest α trained.
"""

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


def _judge_provenance(cmp: Comparison) -> dict[str, Any]:
    """Which judge scored the runs, as the runs record it."""
    return dict(next(r.provenance["judge"] for r in cmp.runs if "judge" in r.provenance))


def assess(cmp: Comparison, *, ip: IPMeasurements | None = None) -> Findings:
    """Test every claim of `CLAIMS` on `cmp` by the rules of `RULES` (and each claim's own); claim 6
    needs `ip`, the IP measurements (`study.prompt_shift`), and is *not tested* without them."""
    roles = cmp.roles
    hp = hook_name(cmp.axes_layer, cmp.point)
    findings = []
    for claim in CLAIMS:
        rule, tests, verdict = claim.test(cmp, roles, hp, ip)
        findings.append(
            Finding(claim.number, claim.title, claim.text, verdict, rule, tuple(tests), tested_by=claim.tested_by)
        )
    rules = RULES + "".join(c.rule for c in CLAIMS) + (JUDGE_RULE if judged(cmp) else "")
    return Findings(
        tuple(findings),
        rules,
        {
            "package_version": __version__,
            "hook_point": hp,
            "labels": list(cmp.labels),
            "seeds": cmp.seeds,
            "strongest_pps": roles.pps,
            "torch_version": torch.__version__,
            **({"judge": _judge_provenance(cmp)} if judged(cmp) else {}),
        },
    )
