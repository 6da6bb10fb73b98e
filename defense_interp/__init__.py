"""defense_interp: see inside the model how defensive fine-tuning methods work.

```python
import defense_interp as di
model = di.load_model()                         # bundled SmolLM2-135M-Instruct, offline
trait = di.Trait.builtin("evil")
axes = di.extract_trait_axes(model, trait)      # TraitAxes, one per layer
run = di.train(model, trait.train_data, condition=di.PPS(axes, coef=4.0), out="runs/pps")
di.compare(run, di.Run.load("runs/ip"), baseline=di.Run.load("runs/base")).report("report.html")
```
"""

__version__ = "0.1.0"

from defense_interp.activations import PromptActivations, collect_activations  # noqa: E402
from defense_interp.axes import TraitAxes, axes_from_conversations, extract_trait_axes  # noqa: E402
from defense_interp.compare import Comparison, compare  # noqa: E402
from defense_interp.findings import Findings, assess  # noqa: E402
from defense_interp.conditions import (  # noqa: E402
    IP, LAT, PPS, Ablation, Baseline, Condition, EmbeddingAT, GradientEdit, PlaceboIP, RandomPPS, pps_sweep,
)
from defense_interp.data import (  # noqa: E402
    ChatBatch, EvalPair, InstructionSet, RefusalData, Trait, encode_chat, encode_prompts, load_chat_jsonl,
    load_hf_conversations, load_instructions,
)
from defense_interp.errors import (  # noqa: E402
    ConfigError, DataError, DefenseInterpError, ModelNotAvailableError, NonFiniteError, RunError,
)
from defense_interp.evaluate import Judge, SubstringJudge, contrast_score, is_refusal, projection_score  # noqa: E402
from defense_interp.generation import generate_answers  # noqa: E402
from defense_interp.interventions import (  # noqa: E402
    GradientStats, ablate, adversarial_perturbation, capture_gradients, edit_gradients, orthogonalize, steer,
)
from defense_interp import metrics  # noqa: E402
from defense_interp.metrics import DifferenceSVD, Estimate, difference_svd  # noqa: E402
from defense_interp.models import copy_model, load_model, model_identity, tiny_model  # noqa: E402
from defense_interp.probe import GradientProbe, probe_gradients  # noqa: E402
from defense_interp.refusal import (  # noqa: E402
    DirectionSelection, RefusalDirections, ablate_direction, add_direction, refusal_directions, select_direction,
)
from defense_interp.refusal_attack import (  # noqa: E402
    LayerSweep, RefusalRate, TransferMatrix, layer_sweep, refusal_rate, transfer_matrix,
)
from defense_interp.refusal_study import RefusalStudy, RefusalStudyConfig, run_refusal_study  # noqa: E402
from defense_interp.runs import Run  # noqa: E402
from defense_interp.training import TrainConfig, load_trained, measure_expression, train  # noqa: E402

__all__ = [
    "__version__",
    "load_model", "tiny_model", "copy_model", "model_identity",
    "Trait", "EvalPair", "ChatBatch", "encode_chat", "encode_prompts", "load_chat_jsonl", "load_hf_conversations",
    "RefusalData", "InstructionSet", "load_instructions", "PromptActivations", "collect_activations",
    "TraitAxes", "extract_trait_axes", "axes_from_conversations",
    "steer", "ablate", "capture_gradients", "edit_gradients", "GradientStats",
    "Condition", "Baseline", "PPS", "RandomPPS", "IP", "PlaceboIP", "Ablation", "GradientEdit", "pps_sweep",
    "LAT", "EmbeddingAT", "adversarial_perturbation", "orthogonalize",
    "probe_gradients", "GradientProbe", "metrics",
    "TrainConfig", "train", "measure_expression", "load_trained", "Run",
    "RefusalDirections", "refusal_directions", "DirectionSelection", "select_direction", "ablate_direction",
    "add_direction", "RefusalRate", "refusal_rate", "LayerSweep", "layer_sweep", "TransferMatrix", "transfer_matrix",
    "RefusalStudy", "RefusalStudyConfig", "run_refusal_study", "Judge", "SubstringJudge", "is_refusal",
    "projection_score", "contrast_score", "generate_answers", "Estimate", "difference_svd", "DifferenceSVD",
    "compare", "Comparison", "assess", "Findings",
    "DefenseInterpError", "ConfigError", "DataError", "ModelNotAvailableError", "RunError", "NonFiniteError",
]
