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

from defense_interp import metrics
from defense_interp.axes import TraitAxes, axes_from_conversations, extract_trait_axes
from defense_interp.data import (
    ChatBatch,
    EvalPair,
    InstructionSet,
    RefusalData,
    Trait,
    encode_chat,
    encode_prompts,
    load_chat_jsonl,
    load_hf_conversations,
    load_instructions,
    set_thinking,
)
from defense_interp.errors import (
    ConfigError,
    DataError,
    DefenseInterpError,
    ModelNotAvailableError,
    NonFiniteError,
    RunError,
)
from defense_interp.evaluate import Judge, contrast_score, projection_score
from defense_interp.execution import RayExecutor
from defense_interp.families import random_model, random_model_folder
from defense_interp.forward import generate_answers
from defense_interp.interventions import (
    GradientStats,
    ablate,
    adversarial_perturbation,
    capture_gradients,
    edit_gradients,
    orthogonalize,
    steer,
)
from defense_interp.memory import MemoryPlan, memory_plan
from defense_interp.metrics import DifferenceSVD, Estimate, difference_svd
from defense_interp.models import ModelSpec, copy_model, load_model, model_identity, tiny_model
from defense_interp.provenance import __version__
from defense_interp.refusal import (
    DirectionSelection,
    LayerSweep,
    PromptActivations,
    RefusalDirections,
    RefusalRate,
    RefusalStudy,
    RefusalStudyConfig,
    SubstringJudge,
    TransferMatrix,
    ablate_direction,
    add_direction,
    collect_activations,
    is_refusal,
    layer_sweep,
    refusal_directions,
    refusal_rate,
    run_refusal_study,
    select_direction,
    transfer_matrix,
)
from defense_interp.study import Comparison, Findings, StudyConfig, assess, compare, run_study
from defense_interp.training import (
    IP,
    LAT,
    PPS,
    Ablation,
    Baseline,
    Condition,
    EmbeddingAT,
    GradientEdit,
    GradientProbe,
    PlaceboIP,
    RandomPPS,
    Run,
    TrainConfig,
    load_trained,
    measure_expression,
    pps_sweep,
    probe_gradients,
    train,
)
from defense_interp.verify import verify_model

__all__ = [
    "IP",
    "LAT",
    "PPS",
    "Ablation",
    "Baseline",
    "ChatBatch",
    "Comparison",
    "Condition",
    "ConfigError",
    "DataError",
    "DefenseInterpError",
    "DifferenceSVD",
    "DirectionSelection",
    "EmbeddingAT",
    "Estimate",
    "EvalPair",
    "Findings",
    "GradientEdit",
    "GradientProbe",
    "GradientStats",
    "InstructionSet",
    "Judge",
    "LayerSweep",
    "MemoryPlan",
    "ModelNotAvailableError",
    "ModelSpec",
    "NonFiniteError",
    "PlaceboIP",
    "PromptActivations",
    "RandomPPS",
    "RayExecutor",
    "RefusalData",
    "RefusalDirections",
    "RefusalRate",
    "RefusalStudy",
    "RefusalStudyConfig",
    "Run",
    "RunError",
    "StudyConfig",
    "SubstringJudge",
    "TrainConfig",
    "Trait",
    "TraitAxes",
    "TransferMatrix",
    "__version__",
    "ablate",
    "ablate_direction",
    "add_direction",
    "adversarial_perturbation",
    "assess",
    "axes_from_conversations",
    "capture_gradients",
    "collect_activations",
    "compare",
    "contrast_score",
    "copy_model",
    "difference_svd",
    "edit_gradients",
    "encode_chat",
    "encode_prompts",
    "extract_trait_axes",
    "generate_answers",
    "is_refusal",
    "layer_sweep",
    "load_chat_jsonl",
    "load_hf_conversations",
    "load_instructions",
    "load_model",
    "load_trained",
    "measure_expression",
    "memory_plan",
    "metrics",
    "model_identity",
    "orthogonalize",
    "pps_sweep",
    "probe_gradients",
    "projection_score",
    "random_model",
    "random_model_folder",
    "refusal_directions",
    "refusal_rate",
    "run_refusal_study",
    "run_study",
    "select_direction",
    "set_thinking",
    "steer",
    "tiny_model",
    "train",
    "transfer_matrix",
    "verify_model",
]
