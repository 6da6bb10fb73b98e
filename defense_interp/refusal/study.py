"""The refusal study (`defense-interp refusal`): how SSFT, embedding-space AT and LAT variants of a
model represent refusal, and how well a refusal-direction ablation attack works on each.

Steps (everything on the bundled `RefusalData` unless given; pairs split by a seeded permutation
into *direction*, *selection* and *attack* sets, `config.splits`):

1. Analyse the base model: activations of the direction set at `blocks.{l}.hook_resid_post`, every
   layer, every post-instruction position; per layer the SVD of the paired differences at the last
   position (uncentred, centred, without outlier channels); difference-in-means directions;
   candidate selection on the selection set (every `candidate_stride`-th layer below `0.8·n`, the
   last `candidate_positions` positions); a layer sweep of refusal rates on the
   attack set with each swept layer's direction ablated.
2. Train SSFT (`Baseline`), AT (`EmbeddingAT`) and LAT (`LAT` at `lat_layer`, default `n/3`) with
   LoRA on the refusal-training conversations. ε = `epsilon_fraction` × the median token norm of
   the base model at the perturbed hook on the training prompts. Gradient pressure is captured
   along the base model's chosen refusal direction.
3. Analyse each trained model as in 1.
4. The transfer matrix: each model's chosen direction ablated in every model (attack set), and each
   model's refusal rate on the harmless attack prompts (over-refusal).

Each finished training run and each model's analysis is written to `out` as it completes; a rerun
in the same folder loads them instead of recomputing (an interrupted study resumes). `manifest.json`
records the config, model and data fingerprint: a rerun with different ones raises `ConfigError`
instead of mixing two studies, and a retrained run invalidates its analysis and the transfer matrix.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from defense_interp.data.chat import encode_chat
from defense_interp.data.refusal import RefusalData
from defense_interp.errors import ConfigError, RunError
from defense_interp.forward import read_activations
from defense_interp.io import content_hash, json_fields, read_json, write_json
from defense_interp.models import model_identity
from defense_interp.refusal.analysis import ModelAnalysis, analyse_refusal
from defense_interp.refusal.attack import RefusalRate, TransferMatrix, refusal_rate, transfer_matrix
from defense_interp.refusal.directions import DirectionSelection
from defense_interp.training import LAT, Baseline, Condition, EmbeddingAT, Run, TrainConfig, load_trained, train
from defense_interp.types import hook_name

__all__ = [
    "ANALYSIS_DIR",
    "MANIFEST_FILE",
    "REFUSAL_PRESETS",
    "REPORT_FILE",
    "RESULT_FILE",
    "RUNS_DIR",
    "TRANSFER_FILE",
    "RefusalStudy",
    "RefusalStudyConfig",
    "median_token_norm",
    "run_refusal_study",
]

MANIFEST_FILE = "manifest.json"
RESULT_FILE = "refusal.json"
REPORT_FILE = "report.html"
TRANSFER_FILE = "transfer.json"
RUNS_DIR = "runs"
ANALYSIS_DIR = "analysis"


@dataclass(frozen=True)
class RefusalStudyConfig:
    """Sizes of the refusal study (module docstring)."""

    steps: int = 32
    batch_size: int = 4
    lr: float = 3e-4
    seed: int = 0
    pgd_steps: int = 3
    epsilon_fraction: float = 0.05
    lat_layer: int | None = None
    splits: tuple[int, int, int] = (64, 16, 32)
    candidate_stride: int = 3
    candidate_positions: int = 3
    sweep_stride: int = 3
    max_new_tokens: int = 24
    sweep_new_tokens: int = 16
    svd_k: int = 10
    max_length: int = 128

    def __post_init__(self) -> None:
        if (
            min(
                self.steps,
                self.pgd_steps,
                self.candidate_stride,
                self.candidate_positions,
                self.sweep_stride,
                self.max_new_tokens,
                self.sweep_new_tokens,
            )
            < 1
            or not self.epsilon_fraction > 0
        ):
            raise ConfigError(f"every size in RefusalStudyConfig must be positive: {self}")
        if self.svd_k < 2 or len(self.splits) != 3:
            raise ConfigError("RefusalStudyConfig needs svd_k ≥ 2 and three splits (directions, selection, attack)")

    def to_dict(self) -> dict[str, Any]:
        return json_fields(self)


REFUSAL_PRESETS = {
    "quick": RefusalStudyConfig(),
    "tiny": RefusalStudyConfig(
        steps=4,
        pgd_steps=2,
        splits=(16, 6, 8),
        candidate_stride=1,
        candidate_positions=2,
        sweep_stride=2,
        max_new_tokens=6,
        sweep_new_tokens=4,
        max_length=512,
    ),
}


@dataclass(frozen=True)
class RefusalStudy:
    """Everything the refusal study measured (module docstring)."""

    labels: tuple[str, ...]
    analyses: dict[str, ModelAnalysis]
    transfer: TransferMatrix
    harmless_rates: dict[str, RefusalRate]
    runs: dict[str, Run]
    epsilons: dict[str, float]
    config: RefusalStudyConfig
    model: dict[str, Any]
    wall_seconds: float

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per model: refusal with and without its own direction ablated, over-refusal, the chosen
        direction and the top-1 explained energy there (three ways)."""
        rows = []
        for j, label in enumerate(self.labels):
            a = self.analyses[label]
            layer, pos = a.selection.chosen
            s = a.svd[a.directions.layers.index(layer)] if layer in a.directions.layers else None
            rows.append(
                {
                    "model": label,
                    "refusal on harmful": self.transfer.baseline[j].rate,
                    "refusal on harmless": self.harmless_rates[label].rate,
                    "own direction ablated": self.transfer.rates[j][j].rate,
                    "direction (layer, position)": f"{layer}, {pos}" + (" (fallback)" if a.selection.fallback else ""),
                    "bypass log-odds": f"{float(a.selection.bypass.flatten()[_cell(a.selection)]):.2f}",
                    "σ₁² share (uncentred / centred / no outliers) at last position": "—"
                    if s is None
                    else f"{float(s.explained[0]):.2f} / {float(s.explained_centered[0]):.2f} / "
                    f"{float(s.explained_without_outliers[0]):.2f}",
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "config": self.config.to_dict(),
            "model": self.model,
            "epsilons": self.epsilons,
            "wall_seconds": self.wall_seconds,
            "summary": [
                {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in r.items()} for r in self.summary_rows()
            ],
            "transfer": self.transfer.to_dict(),
            "harmless_rates": {k: v.to_dict() for k, v in self.harmless_rates.items()},
            "svd": {k: a.svd_rows() for k, a in self.analyses.items()},
            "selection": {k: a.selection.to_dict() for k, a in self.analyses.items()},
            "hook_point": "blocks.{l}.hook_resid_post",
        }

    def report(self, path: str | Path) -> Path:
        from defense_interp.report.refusal import write_refusal_report

        return write_refusal_report(self, path)


def _cell(sel: DirectionSelection) -> int:
    return sel.layers.index(sel.chosen[0]) * len(sel.positions) + sel.positions.index(sel.chosen[1])


def median_token_norm(
    model: Any, conversations: list, *, layer: int, point: str, max_length: int, batch_size: int = 16
) -> float:
    """Median L2 norm of the prompt tokens' residual stream at `blocks.{layer}.hook_{point}`."""
    norms: list[torch.Tensor] = []
    for i in range(0, len(conversations), batch_size):
        b = encode_chat(model, conversations[i : i + batch_size], max_length=max_length)
        keep = b.attention_mask.bool() & ~b.response_mask

        def grab(x: torch.Tensor, hook: Any, keep: torch.Tensor = keep) -> None:
            norms.append(x.detach().float().norm(dim=-1).cpu()[keep])

        read_activations(model, b.tokens, b.attention_mask, [(hook_name(layer, point), grab)])
    return float(torch.cat(norms).median())


def _conditions(model: Any, data: RefusalData, config: RefusalStudyConfig) -> dict[str, Condition]:
    n = model.cfg.n_layers
    lat_layer = n // 3 if config.lat_layer is None else config.lat_layer
    if not 0 <= lat_layer < n:
        raise ConfigError(f"lat_layer {lat_layer} is outside 0..{n - 1}")
    convs = list(data.train[:32])
    eps = {
        "at": config.epsilon_fraction
        * median_token_norm(model, convs, layer=0, point="resid_pre", max_length=config.max_length),
        "lat": config.epsilon_fraction
        * median_token_norm(model, convs, layer=lat_layer, point="resid_post", max_length=config.max_length),
    }
    return {
        "ssft": Baseline(),
        "at": EmbeddingAT(round(eps["at"], 4), config.pgd_steps),
        "lat": LAT(lat_layer, round(eps["lat"], 4), config.pgd_steps),
    }


def _manifest(out: Path, model: Any, data: RefusalData, config: RefusalStudyConfig) -> None:
    """Record what the folder's results were computed from; refuse to mix a different study into it."""
    fingerprint = content_hash([list(data.harmful), list(data.harmless), list(data.train)])
    manifest = {"config": config.to_dict(), "model": model_identity(model), "data": fingerprint}
    path = out / MANIFEST_FILE
    if path.is_file():
        old = read_json(path)
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            raise ConfigError(
                f"{out} holds a refusal study with a different {' and '.join(changed)}; its finished "
                "pieces would be mixed into this one. Use another --out folder (or delete this one)"
            )
    else:
        write_json(path, manifest)


def _variants(
    model: Any, data: RefusalData, config: RefusalStudyConfig, out: Path, axes: Any, progress: bool
) -> dict[str, Run]:
    """Train (or load) each variant's run; a retrained run invalidates its analysis and the transfer matrix."""
    tcfg = TrainConfig(
        steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed, max_length=config.max_length
    )
    runs: dict[str, Run] = {}
    for label, cond in tqdm(
        _conditions(model, data, config).items(), desc="refusal study: variants", disable=not progress
    ):
        folder = out / RUNS_DIR / label
        try:
            runs[label] = Run.load(folder)
        except RunError:
            runs[label] = train(
                model, list(data.train), cond, tcfg, out=folder, axes=axes, name=label, resume=True, progress=progress
            )
            shutil.rmtree(out / ANALYSIS_DIR / label, ignore_errors=True)  # results of an older run of this label
            (out / TRANSFER_FILE).unlink(missing_ok=True)
    return runs


def _transfer(
    models: dict[str, Any],
    analyses: dict[str, ModelAnalysis],
    sets: list,
    config: RefusalStudyConfig,
    out: Path,
    progress: bool,
) -> tuple[TransferMatrix, dict[str, RefusalRate]]:
    """The transfer matrix and each model's over-refusal on the harmless attack prompts (saved once)."""
    att_h, att_s = sets[2]
    path = out / TRANSFER_FILE
    if path.is_file():
        saved = read_json(path)
        return (
            TransferMatrix.from_dict(saved["transfer"]),
            {k: RefusalRate.from_dict(v) for k, v in saved["harmless"].items()},
        )
    transfer = transfer_matrix(
        models,
        {k: a.direction for k, a in analyses.items()},
        att_h,
        max_new_tokens=config.max_new_tokens,
        progress=progress,
    )
    harmless = {
        k: refusal_rate(m, att_s, max_new_tokens=config.max_new_tokens, progress=False) for k, m in models.items()
    }
    write_json(path, {"transfer": transfer.to_dict(), "harmless": {k: v.to_dict() for k, v in harmless.items()}})
    return transfer, harmless


def run_refusal_study(
    model: Any,
    out: str | Path,
    *,
    config: RefusalStudyConfig | None = None,
    data: RefusalData | None = None,
    progress: bool = True,
) -> RefusalStudy:
    """Run the whole study (module docstring) and write `out/refusal.json` and `out/report.html`."""
    started = time.time()
    config = config or RefusalStudyConfig()
    data = data or RefusalData.builtin()
    out = Path(out)
    sets = data.splits(config.splits, seed=config.seed)
    _manifest(out, model, data, config)

    def analysed(label: str, m: Any) -> ModelAnalysis:
        folder = out / ANALYSIS_DIR / label
        if ModelAnalysis.is_saved(folder):
            return ModelAnalysis.load(folder)
        a = analyse_refusal(m, label, sets, config, progress=progress)
        a.save(folder)
        return a

    analyses = {"base": analysed("base", model)}
    layer, position = analyses["base"].selection.chosen
    runs = _variants(
        model, data, config, out, analyses["base"].directions.as_axes(position=position, layer=layer), progress
    )
    models: dict[str, Any] = {"base": model}
    for label, run in runs.items():
        models[label] = load_trained(model, run)
        analyses[label] = analysed(label, models[label])
    transfer, harmless = _transfer(models, analyses, sets, config, out, progress)
    study = RefusalStudy(
        labels=tuple(models),
        analyses=analyses,
        transfer=transfer,
        harmless_rates=harmless,
        runs=runs,
        epsilons={k: float(r.condition.epsilon) for k, r in runs.items() if isinstance(r.condition, LAT)},
        config=config,
        model=model_identity(model),
        wall_seconds=round(time.time() - started, 1),
    )
    write_json(out / RESULT_FILE, study.to_dict())
    study.report(out / REPORT_FILE)
    return study
