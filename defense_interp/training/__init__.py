"""Training under a condition and what it records: conditions (typed records with a registry),
the training loop, trainable adapters, checkpoints, run folders and counterfactual gradient probes.

| module        | holds                                                                      |
|---------------|----------------------------------------------------------------------------|
| `conditions`  | `Condition`, its registry and kinds (Baseline, PPS, IP, controls, edits)   |
| `adversarial` | LAT and embedding-space AT                                                 |
| `ip_parts`    | conditions that take IP apart: InducedSteering (replayed shift), AttentionKnockout |
| `config`      | `TrainConfig`                                                              |
| `adapters`    | LoRA or full-weight trainable parameters; loading a finished run's weights |
| `measure`     | trait expression and the loss table, before and after training            |
| `probe`       | `probe_gradients` and `GradientProbe`                                      |
| `checkpoint`  | resumable training state                                                   |
| `runs`        | `Run`: a finished run on disk                                              |
| `loop`        | `train()`                                                                  |
"""

from defense_interp.training.adapters import copy_trained, load_trained, make_trainable
from defense_interp.training.adversarial import LAT, EmbeddingAT
from defense_interp.training.conditions import (
    IP,
    PPS,
    Ablation,
    Baseline,
    Condition,
    GradientEdit,
    PlaceboIP,
    RandomPPS,
    condition_type,
    pps_sweep,
)
from defense_interp.training.config import TrainConfig
from defense_interp.training.export import export_run
from defense_interp.training.ip_parts import AttentionKnockout, InducedSteering
from defense_interp.training.loop import train
from defense_interp.training.measure import Start, loss_estimates, measure_expression
from defense_interp.training.probe import GradientProbe, probe_gradients
from defense_interp.training.runs import Run

__all__ = [
    "IP",
    "LAT",
    "PPS",
    "Ablation",
    "AttentionKnockout",
    "Baseline",
    "Condition",
    "EmbeddingAT",
    "GradientEdit",
    "GradientProbe",
    "InducedSteering",
    "PlaceboIP",
    "RandomPPS",
    "Run",
    "Start",
    "TrainConfig",
    "condition_type",
    "copy_trained",
    "export_run",
    "load_trained",
    "loss_estimates",
    "make_trainable",
    "measure_expression",
    "pps_sweep",
    "probe_gradients",
    "train",
]
