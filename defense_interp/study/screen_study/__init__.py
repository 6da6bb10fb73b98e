"""The screening study: which examples of a contaminated dataset teach the trait, validated by
training on what each score ranks, and filtering compared with PPS and IP as a defence.

| module     | what                                                                        |
|------------|-----------------------------------------------------------------------------|
| `config`   | `ScreenStudyConfig`, `SCREEN_SIZES`, the ranked scores                       |
| `sets`     | the training sets (top-k, random-k, bottom-k, filtered) from the scores      |
| `tasks`    | the mixture, its screening, capability, the analysis (as plan tasks)         |
| `plan`     | the two phases as plans of tasks                                             |
| `analysis` | `ScreenStudyResults` and the findings S1–S3 with their rules                 |
| `runner`   | `run_screen_study`                                                           |
"""

from defense_interp.study.screen_study.analysis import RULES, ScreenStudyResults, screen_findings
from defense_interp.study.screen_study.config import SCREEN_SIZES, ScreenStudyConfig
from defense_interp.study.screen_study.runner import ScreenStudyResult, run_screen_study

__all__ = [
    "RULES",
    "SCREEN_SIZES",
    "ScreenStudyConfig",
    "ScreenStudyResult",
    "ScreenStudyResults",
    "run_screen_study",
    "screen_findings",
]
