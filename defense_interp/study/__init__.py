"""The PPS-vs-IP half of the mission: comparing training runs over seeds, finding which condition
plays which part, testing the seed paper's claims, and the end-to-end study.

| module     | holds                                                                    |
|------------|--------------------------------------------------------------------------|
| `roles`    | which condition is the baseline, PPS at the strongest α, IP, a control…  |
| `compare`  | `compare()` and `Comparison`: summaries over seeds with intervals        |
| `findings` | `assess()`: one verdict per claim, by fixed rules                        |
| `mechanism`| what the IP prompt does: its induced shift (H1), explained loss (H4), H5 |
| `mechanism_claim` | claim 6 (IP as a context-induced shift) and the knockout table (H3) |
| `config`   | `StudyConfig`, the designs and sizes                                     |
| `plan`     | `study_plan()`: axes, every condition over seeds, analyses, report      |
| `runner`   | `run_study()`                                                            |
| `tasks`    | the plan's tasks (axes, shared measurements, runs, analysis)             |
"""

from defense_interp.study.compare import Comparison, compare
from defense_interp.study.findings import assess
from defense_interp.study.mechanism import PromptShift, conditional_expression, prompt_shift
from defense_interp.study.probes import PROBE_STATS
from defense_interp.study.roles import Roles, find_roles
from defense_interp.study.runner import DESIGNS, SIZES, StudyConfig, run_study, study_plan
from defense_interp.study.verdicts import CLAIMS, VERDICTS, Finding, Findings, SubTest

__all__ = [
    "CLAIMS",
    "DESIGNS",
    "PROBE_STATS",
    "SIZES",
    "VERDICTS",
    "Comparison",
    "Finding",
    "Findings",
    "PromptShift",
    "Roles",
    "StudyConfig",
    "SubTest",
    "assess",
    "compare",
    "conditional_expression",
    "find_roles",
    "prompt_shift",
    "run_study",
    "study_plan",
]
