"""The PPS-vs-IP half of the mission: comparing training runs over seeds, finding which condition
plays which part, testing the seed paper's claims, and the end-to-end study.

| module     | holds                                                                    |
|------------|--------------------------------------------------------------------------|
| `roles`    | which condition is the baseline, PPS at the strongest α, IP, a control…  |
| `compare`  | `compare()` and `Comparison`: summaries over seeds with intervals        |
| `claims`   | `assess()`: one module per claim, each tested by a fixed rule            |
| `prompt_shift` | what the IP prompt does: its induced shift (H1), explained loss (H4), H5 |
| `ip_view`  | what the report's "How IP works" section draws, knockout table (H3)    |
| `config`   | `StudyConfig`, the designs and sizes                                     |
| `plan`     | `study_plan()`: axes, every condition over seeds, analyses, report      |
| `runner`   | `run_study()`                                                            |
| `tasks`    | the plan's tasks (axes, shared measurements, runs, analysis)             |
"""

from defense_interp.study.claims import CLAIMS, assess
from defense_interp.study.compare import Comparison, compare
from defense_interp.study.probes import PROBE_STATS
from defense_interp.study.prompt_shift import IPMeasurements, PromptShift, conditional_expression, prompt_shift
from defense_interp.study.roles import Roles, find_roles
from defense_interp.study.runner import DESIGNS, SIZES, StudyConfig, StudyResult, run_study, study_plan

__all__ = [
    "CLAIMS",
    "DESIGNS",
    "PROBE_STATS",
    "SIZES",
    "Comparison",
    "IPMeasurements",
    "PromptShift",
    "Roles",
    "StudyConfig",
    "StudyResult",
    "assess",
    "compare",
    "conditional_expression",
    "find_roles",
    "prompt_shift",
    "run_study",
    "study_plan",
]
