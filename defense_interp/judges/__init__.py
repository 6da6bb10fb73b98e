"""LLM judges: 0–100 scores from a judge's distribution over numbers (DESIGN §2, "LLM judges").

* `scoring` — the probability-weighted score and the 0.25 mass rule;
* `LocalJudge` — any loaded chat model, with its exact distribution over 0–100;
* `OpenAIJudge` — any OpenAI-compatible server, from the first token's top-20 logprobs;
* `JudgmentCache` — judgments on disk, so reruns ask nothing twice;
* `prompts` — the coherence and refusal prompts;
* `trait_expression` — sampled answers judged for the trait and coherence (`JudgedAnswers`);
* `client` — `ChatAPI`, the OpenAI-compatible client with retries the API judge and the generator share;
* `generate` — `generate_trait`: a trait file written by any OpenAI-compatible model.
"""

from defense_interp.judges.api import OpenAIJudge
from defense_interp.judges.base import PromptJudge, render_template
from defense_interp.judges.cache import JudgmentCache
from defense_interp.judges.expression import JudgedAnswers, trait_expression
from defense_interp.judges.local import LocalJudge
from defense_interp.judges.prompts import COHERENCE_PROMPT, REFUSAL_PROMPT, REFUSAL_THRESHOLD
from defense_interp.judges.scoring import MIN_MASS, Judgment, number_score
from defense_interp.judges.spec import build_judge, parse_judge

__all__ = [
    "COHERENCE_PROMPT",
    "MIN_MASS",
    "REFUSAL_PROMPT",
    "REFUSAL_THRESHOLD",
    "JudgedAnswers",
    "Judgment",
    "JudgmentCache",
    "LocalJudge",
    "OpenAIJudge",
    "PromptJudge",
    "build_judge",
    "number_score",
    "parse_judge",
    "render_template",
    "trait_expression",
]
