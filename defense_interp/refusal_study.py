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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from defense_interp.activations import collect_activations
from defense_interp.conditions import LAT, Baseline, Condition, EmbeddingAT
from defense_interp.data.chat import encode_chat
from defense_interp.data.refusal import RefusalData
from defense_interp.errors import ConfigError, RunError
from defense_interp.io import content_hash, read_json, read_tensors, write_json, write_tensors
from defense_interp.metrics.svd import DifferenceSVD, difference_svd
from defense_interp.models import model_identity, read_activations
from defense_interp.refusal import DirectionSelection, RefusalDirections, refusal_directions, select_direction
from defense_interp.refusal_attack import (
    LayerSweep, RefusalRate, TransferMatrix, layer_sweep, refusal_rate, transfer_matrix,
)
from defense_interp.runs import Run
from defense_interp.training import TrainConfig, load_trained, train
from defense_interp.types import hook_name

__all__ = ["RefusalStudyConfig", "ModelAnalysis", "RefusalStudy", "run_refusal_study", "analyse_refusal",
           "REFUSAL_PRESETS"]


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
        if min(self.steps, self.pgd_steps, self.candidate_stride, self.candidate_positions, self.sweep_stride,
               self.max_new_tokens, self.sweep_new_tokens) < 1 or not self.epsilon_fraction > 0:
            raise ConfigError(f"every size in RefusalStudyConfig must be positive: {self}")
        if self.svd_k < 2 or len(self.splits) != 3:
            raise ConfigError("RefusalStudyConfig needs svd_k ≥ 2 and three splits (directions, selection, attack)")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


REFUSAL_PRESETS = {
    "quick": RefusalStudyConfig(),
    "tiny": RefusalStudyConfig(steps=4, pgd_steps=2, splits=(16, 6, 8), candidate_stride=1, candidate_positions=2,
                               sweep_stride=2, max_new_tokens=6, sweep_new_tokens=4, max_length=512),
}


@dataclass(frozen=True)
class ModelAnalysis:
    """One model's refusal representation: `svd[i]` is the difference SVD at `blocks.{i}.hook_{point}`,
    last prompt position; directions, their selection and the layer sweep."""

    label: str
    svd: tuple[DifferenceSVD, ...]
    directions: RefusalDirections
    selection: DirectionSelection
    sweep: LayerSweep
    model: dict[str, Any]

    @property
    def direction(self) -> torch.Tensor:
        """The chosen refusal direction (raw)."""
        return self.directions.direction(*self.selection.chosen)

    def svd_rows(self) -> list[dict[str, Any]]:
        """One row per layer: explained energy of the first components, three ways, and outliers."""
        rows = []
        for l, s in zip(self.directions.layers, self.svd):
            rows.append({"layer": l, "explained_1": float(s.explained[0]), "explained_2": float(s.explained[1]),
                         "centered_1": float(s.explained_centered[0]), "centered_2": float(s.explained_centered[1]),
                         "without_outliers_1": float(s.explained_without_outliers[0]),
                         "without_outliers_2": float(s.explained_without_outliers[1]),
                         "cos(v1, mean D)": float(s.mean_cosine[0]),
                         "outlier channels (share)": ", ".join(f"{c} ({float(s.channel_share[c]):.0%})"
                                                               for c in s.outlier_channels) or "none"})
        return rows

    def save(self, folder: Path) -> None:
        self.directions.save(folder)
        write_tensors(folder / "svd_vectors.safetensors", {"vectors": torch.stack([s.vectors for s in self.svd])})
        write_json(folder / "analysis.json", {"label": self.label, "model": self.model,
                                              "svd": [s.to_dict() for s in self.svd],
                                              "selection": self.selection.to_dict(), "sweep": self.sweep.to_dict()})

    @classmethod
    def load(cls, folder: Path) -> "ModelAnalysis":
        d = read_json(folder / "analysis.json")
        vectors = read_tensors(folder / "svd_vectors.safetensors")["vectors"]
        return cls(d["label"], tuple(DifferenceSVD.from_dict(s, vectors=v) for s, v in zip(d["svd"], vectors)),
                   RefusalDirections.load(folder),
                   DirectionSelection.from_dict(d["selection"]), LayerSweep.from_dict(d["sweep"]), d["model"])


def analyse_refusal(model: Any, label: str, sets: list, config: RefusalStudyConfig, *, progress: bool = True
                    ) -> ModelAnalysis:
    """Step 1 of the module docstring for one model; `sets` = `RefusalData.splits(config.splits)`."""
    (dir_h, dir_s), (sel_h, sel_s), (att_h, _) = sets
    kw = dict(point="resid_post", positions="post_instruction", progress=progress)
    harmful = collect_activations(model, dir_h, desc=f"{label}: harmful activations", **kw)
    harmless = collect_activations(model, dir_s, desc=f"{label}: harmless activations", **kw)
    svd = tuple(difference_svd(harmful.at(l, -1), harmless.at(l, -1), k=config.svd_k) for l in harmful.layers)
    directions = refusal_directions(harmful, harmless)
    n = model.cfg.n_layers
    cand_layers = [l for l in range(0, n, config.candidate_stride) if l < 0.8 * n]
    selection = select_direction(model, directions, sel_h, sel_s, layers=cand_layers,
                                 positions=directions.positions[-config.candidate_positions:], progress=progress)
    sweep = layer_sweep(model, directions, att_h, position=selection.chosen[1],
                        layers=list(range(0, n, config.sweep_stride)), max_new_tokens=config.sweep_new_tokens,
                        progress=progress)
    return ModelAnalysis(label, svd, directions, selection, sweep, model_identity(model))


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
            rows.append({"model": label, "refusal on harmful": self.transfer.baseline[j].rate,
                         "refusal on harmless": self.harmless_rates[label].rate,
                         "own direction ablated": self.transfer.rates[j][j].rate,
                         "direction (layer, position)": f"{layer}, {pos}" + (" (fallback)" if a.selection.fallback else ""),
                         "bypass log-odds": f"{float(a.selection.bypass.flatten()[_cell(a.selection)]):.2f}",
                         "σ₁² share (uncentred / centred / no outliers) at last position": "—" if s is None else
                         f"{float(s.explained[0]):.2f} / {float(s.explained_centered[0]):.2f} / "
                         f"{float(s.explained_without_outliers[0]):.2f}"})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "config": self.config.to_dict(), "model": self.model,
                "epsilons": self.epsilons, "wall_seconds": self.wall_seconds,
                "summary": [{k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in r.items()}
                            for r in self.summary_rows()],
                "transfer": self.transfer.to_dict(),
                "harmless_rates": {k: v.to_dict() for k, v in self.harmless_rates.items()},
                "svd": {k: a.svd_rows() for k, a in self.analyses.items()},
                "selection": {k: a.selection.to_dict() for k, a in self.analyses.items()},
                "hook_point": "blocks.{l}.hook_resid_post"}

    def report(self, path: str | Path) -> Path:
        from defense_interp.report.refusal import write_refusal_report

        return write_refusal_report(self, path)


def _cell(sel: DirectionSelection) -> int:
    return sel.layers.index(sel.chosen[0]) * len(sel.positions) + sel.positions.index(sel.chosen[1])


def median_token_norm(model: Any, conversations: list, *, layer: int, point: str, max_length: int,
                      batch_size: int = 16) -> float:
    """Median L2 norm of the prompt tokens' residual stream at `blocks.{layer}.hook_{point}`."""
    norms: list[torch.Tensor] = []
    for i in range(0, len(conversations), batch_size):
        b = encode_chat(model, conversations[i : i + batch_size], max_length=max_length)
        keep = b.attention_mask.bool() & ~b.response_mask

        def grab(x, hook):
            norms.append(x.detach().float().norm(dim=-1).cpu()[keep])

        read_activations(model, b.tokens, b.attention_mask, [(hook_name(layer, point), grab)])
    return float(torch.cat(norms).median())


def _conditions(model: Any, data: RefusalData, config: RefusalStudyConfig) -> dict[str, Condition]:
    n = model.cfg.n_layers
    lat_layer = n // 3 if config.lat_layer is None else config.lat_layer
    if not 0 <= lat_layer < n:
        raise ConfigError(f"lat_layer {lat_layer} is outside 0..{n - 1}")
    convs = list(data.train[:32])
    eps = {"at": config.epsilon_fraction * median_token_norm(model, convs, layer=0, point="resid_pre",
                                                            max_length=config.max_length),
           "lat": config.epsilon_fraction * median_token_norm(model, convs, layer=lat_layer, point="resid_post",
                                                             max_length=config.max_length)}
    return {"ssft": Baseline(), "at": EmbeddingAT(round(eps["at"], 4), config.pgd_steps),
            "lat": LAT(lat_layer, round(eps["lat"], 4), config.pgd_steps)}


def _manifest(out: Path, model: Any, data: RefusalData, config: RefusalStudyConfig) -> None:
    """Record what the folder's results were computed from; refuse to mix a different study into it."""
    fingerprint = content_hash([list(data.harmful), list(data.harmless), list(data.train)])
    manifest = {"config": config.to_dict(), "model": model_identity(model), "data": fingerprint}
    path = out / "manifest.json"
    if path.is_file():
        old = read_json(path)
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            raise ConfigError(f"{out} holds a refusal study with a different {' and '.join(changed)}; its finished "
                              "pieces would be mixed into this one. Use another --out folder (or delete this one)")
    else:
        write_json(path, manifest)


def run_refusal_study(model: Any, out: str | Path, *, config: RefusalStudyConfig | None = None,
                      data: RefusalData | None = None, progress: bool = True) -> RefusalStudy:
    """Run the whole study (module docstring) and write `out/refusal.json` and `out/report.html`."""
    started = time.time()
    config = config or RefusalStudyConfig()
    data = data or RefusalData.builtin()
    out = Path(out)
    sets = data.splits(config.splits, seed=config.seed)
    _manifest(out, model, data, config)

    def analysed(label: str, m: Any) -> ModelAnalysis:
        folder = out / "analysis" / label
        if (folder / "analysis.json").is_file():
            return ModelAnalysis.load(folder)
        a = analyse_refusal(m, label, sets, config, progress=progress)
        a.save(folder)
        return a

    analyses = {"base": analysed("base", model)}
    axes = analyses["base"].directions.as_axes(position=analyses["base"].selection.chosen[1],
                                               layer=analyses["base"].selection.chosen[0])
    conds = _conditions(model, data, config)
    tcfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                       max_length=config.max_length)
    runs: dict[str, Run] = {}
    models: dict[str, Any] = {"base": model}
    for label, cond in tqdm(conds.items(), desc="refusal study: variants", disable=not progress):
        folder = out / "runs" / label
        try:
            runs[label] = Run.load(folder)
        except RunError:
            runs[label] = train(model, list(data.train), cond, tcfg, out=folder, axes=axes, name=label,
                                resume=True, progress=progress)
            shutil.rmtree(out / "analysis" / label, ignore_errors=True)  # results of an older run of this label
            (out / "transfer.json").unlink(missing_ok=True)
        models[label] = load_trained(model, runs[label])
        analyses[label] = analysed(label, models[label])
    att_h, att_s = sets[2]
    transfer_file = out / "transfer.json"
    if transfer_file.is_file():
        saved = read_json(transfer_file)
        transfer = TransferMatrix.from_dict(saved["transfer"])
        harmless = {k: RefusalRate.from_dict(v) for k, v in saved["harmless"].items()}
    else:
        transfer = transfer_matrix(models, {k: a.direction for k, a in analyses.items()}, att_h,
                                   max_new_tokens=config.max_new_tokens, progress=progress)
        harmless = {k: refusal_rate(m, att_s, max_new_tokens=config.max_new_tokens, progress=False)
                    for k, m in models.items()}
        write_json(transfer_file, {"transfer": transfer.to_dict(), "harmless": {k: v.to_dict() for k, v in harmless.items()}})
    eps = {k: float(r.condition["epsilon"]) for k, r in runs.items() if "epsilon" in r.condition}
    study = RefusalStudy(tuple(models), analyses, transfer, harmless, runs, eps, config, model_identity(model),
                         round(time.time() - started, 1))
    write_json(out / "refusal.json", study.to_dict())
    study.report(out / "report.html")
    return study

