"""defense_interp: see inside the model how defensive fine-tuning methods work.

```python
import defense_interp as di
model, trait = di.load_model(), di.Trait.builtin("evil")   # bundled SmolLM2-135M-Instruct, offline
axes = di.extract_trait_axes(model, trait)                  # TraitAxes, one per layer
cmp = di.compare(*(di.train(model, trait, c, axes=axes) for c in (di.Baseline(), di.PPS(axes, coef=4.0), di.IP())))
cmp.report("report.html", axes=axes, findings=di.assess(cmp))
```

The names here are the ones the README, the quickstart and the notebooks use; everything else is
imported from its subpackage (`defense_interp.training`, `.refusal`, `.judges`, `.metrics`, ...),
as the API reference shows.
"""

from defense_interp.axes import TraitAxes, extract_trait_axes
from defense_interp.claims import Findings
from defense_interp.data import RefusalData, Trait, load_chat_jsonl
from defense_interp.errors import (
    ConfigError,
    DataError,
    DefenseInterpError,
    ModelNotAvailableError,
    NonFiniteError,
    RunError,
)
from defense_interp.evaluate import Judge, projection_score
from defense_interp.forward import generate_answers
from defense_interp.interventions import ablate, capture_gradients, edit_gradients, orthogonalize, steer
from defense_interp.judges import LocalJudge, OpenAIJudge, trait_expression
from defense_interp.judges.generate import generate_trait
from defense_interp.metrics import difference_svd
from defense_interp.models import load_model, tiny_model
from defense_interp.provenance import __version__
from defense_interp.refusal import (
    ablate_direction,
    collect_activations,
    layer_sweep,
    refusal_directions,
    refusal_rate,
    run_refusal_study,
    select_direction,
    transfer_matrix,
)
from defense_interp.screening import screen
from defense_interp.study import Comparison, StudyConfig, assess, compare, prompt_shift, run_study
from defense_interp.training import (
    IP,
    LAT,
    PPS,
    Ablation,
    Baseline,
    EmbeddingAT,
    GradientEdit,
    PlaceboIP,
    RandomPPS,
    Run,
    Start,
    TrainConfig,
    measure_expression,
    pps_sweep,
    probe_gradients,
    train,
)
from defense_interp.training.routes import write_routes

__all__ = [
    "IP",
    "LAT",
    "PPS",
    "Ablation",
    "Baseline",
    "Comparison",
    "ConfigError",
    "DataError",
    "DefenseInterpError",
    "EmbeddingAT",
    "Findings",
    "GradientEdit",
    "Judge",
    "LocalJudge",
    "ModelNotAvailableError",
    "NonFiniteError",
    "OpenAIJudge",
    "PlaceboIP",
    "RandomPPS",
    "RefusalData",
    "Run",
    "RunError",
    "Start",
    "StudyConfig",
    "TrainConfig",
    "Trait",
    "TraitAxes",
    "__version__",
    "ablate",
    "ablate_direction",
    "assess",
    "capture_gradients",
    "collect_activations",
    "compare",
    "difference_svd",
    "edit_gradients",
    "extract_trait_axes",
    "generate_answers",
    "generate_trait",
    "layer_sweep",
    "load_chat_jsonl",
    "load_model",
    "measure_expression",
    "orthogonalize",
    "pps_sweep",
    "probe_gradients",
    "projection_score",
    "prompt_shift",
    "refusal_directions",
    "refusal_rate",
    "run_refusal_study",
    "run_study",
    "screen",
    "select_direction",
    "steer",
    "tiny_model",
    "train",
    "trait_expression",
    "transfer_matrix",
    "write_routes",
]
