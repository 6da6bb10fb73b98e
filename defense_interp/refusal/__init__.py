"""The refusal half of the mission (DESIGN §2, refusal representation): how refusal is represented,
how a refusal direction is found and attacked, and how adversarial training changes both.

| module        | holds                                                                        |
|---------------|------------------------------------------------------------------------------|
| `activations` | residual-stream activations of instruction prompts at post-instruction tokens |
| `directions`  | difference-in-means refusal directions, their selection, ablation, addition   |
| `judges`      | the refusal rules: substring judge and the first tokens of a refusal          |
| `attack`      | refusal rates of generations, the layer sweep, the transfer matrix            |
| `analysis`    | one model's SVD, directions, selection and sweep                              |
| `config`      | `RefusalStudyConfig`, the presets, the token norm ε is scaled by              |
| `tasks`       | the study's tasks (analysis, training, transfer rows), run by any executor    |
| `study`       | `run_refusal_study`: SSFT, AT and LAT variants analysed and attacked          |
"""

from defense_interp.refusal.activations import PromptActivations, collect_activations, post_instruction_positions
from defense_interp.refusal.analysis import ModelAnalysis, analyse_refusal
from defense_interp.refusal.attack import (
    LayerSweep,
    RefusalRate,
    TransferMatrix,
    layer_sweep,
    refusal_rate,
    transfer_matrix,
)
from defense_interp.refusal.config import REFUSAL_PRESETS, RefusalStudyConfig
from defense_interp.refusal.directions import RefusalDirections, ablate_direction, refusal_directions
from defense_interp.refusal.judges import (
    REFUSAL_STARTS,
    REFUSAL_SUBSTRINGS,
    SubstringJudge,
    is_refusal,
    refusal_token_ids,
)
from defense_interp.refusal.selection import DirectionSelection, select_direction
from defense_interp.refusal.stored import StoredSVD, load_activations, stored_svd, write_svd_report
from defense_interp.refusal.study import RefusalStudy, run_refusal_study

__all__ = [
    "REFUSAL_PRESETS",
    "REFUSAL_STARTS",
    "REFUSAL_SUBSTRINGS",
    "DirectionSelection",
    "LayerSweep",
    "ModelAnalysis",
    "PromptActivations",
    "RefusalDirections",
    "RefusalRate",
    "RefusalStudy",
    "RefusalStudyConfig",
    "StoredSVD",
    "SubstringJudge",
    "TransferMatrix",
    "ablate_direction",
    "analyse_refusal",
    "collect_activations",
    "is_refusal",
    "layer_sweep",
    "load_activations",
    "post_instruction_positions",
    "refusal_directions",
    "refusal_rate",
    "refusal_token_ids",
    "run_refusal_study",
    "select_direction",
    "stored_svd",
    "transfer_matrix",
    "write_svd_report",
]
