"""Builders shared by the tests: small training configs, hook counting, the study fixtures' commands
and their build once per session, and runs with planted statistics (a comparison whose right answers are known)."""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import defense_interp as di
from defense_interp.interventions.capture import GradientStats
from defense_interp.metrics import Estimate, mean_ci
from defense_interp.training import GradientProbe

#: What every test training run on the tiny model shares: two examples a batch, the tiny model's
#: byte-level tokens (long), a two-example loss table and no evaluation beyond two short answers.
TINY_TRAIN = dict(batch_size=2, max_length=512, loss_examples=2, eval_questions=2, eval_max_new_tokens=4)

#: `defense-interp study` of the snapshot (the full design on the tiny model, default tiny sizes).
TINY_FULL_STUDY_ARGS = ["study", "--preset", "full", "--model", "tiny"]

#: `defense-interp study` of the quick design on the tiny model, two steps (baseline, PPS and IP, one seed).
TINY_QUICK_STUDY_ARGS = ["study", "--model", "tiny", "--steps", "2"]
#: `defense-interp refusal` of the snapshot (the tiny preset).
TINY_REFUSAL_ARGS = ["refusal", "--model", "tiny"]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], str]) -> tuple[Path, str]:
    """`(folder, text)`: `build(folder)` run once per test session, its returned text kept. Under
    xdist the workers share the folder: the first to need it builds it holding a file lock, the
    others wait on the lock and read what it built (the study fixtures take minutes on a slow host;
    every writer in the package replaces files atomically, so a test that reruns a study into the
    folder never shows another worker a half-written file)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's base temp, shared by its workers (each has its own below it)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            folder.mkdir(exist_ok=True)
            done_text = build(folder)
            done.write_text(done_text)
    return folder, done.read_text()


def slim(trait: di.Trait, pairs: int = 2) -> di.Trait:
    """`trait` with its first `pairs` eval pairs only: a contrast score of 24 pairs is most of an
    evaluation's time, and what a test checks rarely needs more than two."""
    return dataclasses.replace(trait, eval_pairs=trait.eval_pairs[:pairs])


def tiny_config(**overrides: Any) -> di.TrainConfig:
    """A `TrainConfig` for the tiny model: `TINY_TRAIN` and one step unless overridden."""
    return di.TrainConfig(**{"steps": 1, **TINY_TRAIN, **overrides})


def count_hooks(model: Any) -> int:
    """Forward, backward and forward-pre hooks attached to any module of `model`."""
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# -- planted runs -------------------------------------------------------------------------------
LAYERS = (0, 1, 2)
AXES_LAYER = 1


def _est(values: list[float]) -> Estimate:
    return mean_ci(values, over="eval questions", keep=True)


PLANTED_AXES = di.TraitAxes(
    torch.randn(len(LAYERS), 8, generator=torch.Generator().manual_seed(0)),
    torch.ones(len(LAYERS)),
    layer=AXES_LAYER,
    trait="evil",
)


def fake_run(
    name, condition, seed, *, key=None, init=None, pn=0.0, before=0.0, after=0.0, start_train=3.0, start_test=3.0
):
    """A Run of `condition` with planted statistics: normalised pressure `pn` at the axes layer (0
    elsewhere), projection scores before/after, and start-of-training losses (4 questions / batches,
    small noise that depends on the seed and `key`, default the name)."""
    g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, key or name)))
    noise = lambda n: (torch.randn(n, generator=g) * 0.01).tolist()  # noqa: E731
    steps = 5
    stat = torch.zeros(steps, len(LAYERS))
    stat[:, LAYERS.index(AXES_LAYER)] = pn + torch.tensor(noise(steps))
    grads = GradientStats(
        LAYERS,
        "resid_post",
        stat * 10,
        stat,
        stat.abs(),
        torch.ones(steps, 3),
        torch.randn(steps, 3, 8, generator=g),
        torch.zeros(steps, 3),
    )
    expr = {w: {"projection": _est([v + e for e in noise(4)])} for w, v in (("before", before), ("after", after))}
    loss = {
        "before": {
            "train_time": _est([start_train + e for e in noise(4)]),
            "test_time": _est([start_test + e for e in noise(4)]),
        },
        "after": {"train_time": _est([2.0 + e for e in noise(4)]), "test_time": _est([2.0 + e for e in noise(4)])},
    }
    return di.Run(
        name=name,
        condition=condition,
        config={"seed": seed},
        model={"name": "m"},
        trait="evil",
        losses=[1.0] * steps,
        gradients=grads,
        expression=expr,
        loss_table=loss,
        provenance={"axes": {"layer": AXES_LAYER}},
        init=init,
    )


def fake_probe(conditions, *, step=0, pn=None, delta=None, loss=None, seed=0):
    """A GradientProbe of `conditions` (baseline first) on the planted layers: normalised pressure
    `pn[label]` at the axes layer, the condition vectors `ḡ = ḡ^base + delta[label]` at the axes layer
    (`ḡ^base` random, 8 wide), losses `loss[label]` (default 3.0); zeros and ones elsewhere."""
    pn, delta, loss = pn or {}, delta or {}, loss or {}
    labels = tuple(c.label for c in conditions)
    k, n_l, li = len(labels), len(LAYERS), LAYERS.index(AXES_LAYER)
    g = torch.Generator().manual_seed(seed)
    gbar = torch.randn(1, n_l, 8, generator=g).repeat(k, 1, 1)
    stat = torch.zeros(k, n_l)
    for i, label in enumerate(labels):
        gbar[i, li] += torch.as_tensor(delta.get(label, torch.zeros(8)), dtype=torch.float32)
        stat[i, li] = pn.get(label, 0.0)
    return GradientProbe(
        labels=labels,
        conditions=tuple(c.to_dict() for c in conditions),
        layers=LAYERS,
        point="resid_post",
        pressure=stat * 10,
        pressure_norm=stat,
        axis_share=stat.abs(),
        grad_norm=torch.ones(k, n_l),
        gbar=gbar,
        eff_rank=torch.ones(k, n_l),
        top_share=torch.ones(k, n_l),
        units=torch.nn.functional.normalize(PLANTED_AXES.vectors.float(), dim=-1),
        loss=torch.tensor([float(loss.get(l, 3.0)) for l in labels]),
        n_tokens=torch.full((k,), 10.0),
        param_gram=torch.zeros(0, k, k),
        step=step,
    )


def planted(flip=True, names=None):
    """The planted study; `names` renames runs (label → new label): roles come from the conditions."""
    names = names or {}
    spec = [
        ("baseline", di.Baseline(), {}, dict(pn=0.05, before=0.0, after=5.0)),
        ("pps_a2", di.PPS(PLANTED_AXES, layer=1, coef=2.0), {}, dict(pn=0.02, after=3.0)),
        ("pps_a8", di.PPS(PLANTED_AXES, layer=1, coef=8.0), {}, dict(pn=-0.05 if flip else 0.05, after=-1.0)),
        ("ip", di.IP(), {}, dict(pn=0.03, after=1.0, start_train=2.5)),
        ("edit_attenuate", di.GradientEdit(PLANTED_AXES, mode="attenuate"), {}, dict(after=0.5)),
        ("edit_amplify", di.GradientEdit(PLANTED_AXES, mode="amplify"), {}, dict(after=8.0)),
        ("two_stage_pps_a8", di.PPS(PLANTED_AXES, coef=8.0), {"init": "baseline"}, dict(before=5.0, after=1.0)),
        ("two_stage_ip", di.IP(), {"init": "baseline"}, dict(before=5.0, after=5.0)),
    ]
    runs = [
        fake_run(names.get(label, label), cond, seed, key=label, **init, **stats)
        for seed in range(3)
        for label, cond, init, stats in spec
    ]
    base = names.get("baseline", "baseline")
    probed = [c for _, c, _, _ in spec[:3]]  # step-0 probe: baseline amplifying, PPS (α 8) attenuating
    for i, r in enumerate(runs):
        if r.name == base:
            pn = {probed[0].label: 0.04 + 0.002 * r.seed, probed[2].label: (-0.04 if flip else 0.04) - 0.002 * r.seed}
            runs[i] = dataclasses.replace(r, probes=(fake_probe(probed, pn=pn, seed=r.seed),))
    return di.compare(*[r for r in runs if r.name != base], baseline=[r for r in runs if r.name == base])


# Result fields that are allowed to differ between two runs of one study (versions, timings).
VOLATILE = {"package_version", "torch_version", "wall_seconds", "versions"}


def differences(old, new, path=""):
    """Every place where `new` differs from `old` (volatile fields skipped; floats to a relative 1e-5
    or an absolute 5e-6 near zero: the torch thread count alone moves them by up to 2e-6, and a
    small effect near zero is a difference of float32 losses near 6, resolution 4.8e-7, whose
    three-seed t-interval multiplies its rounding by up to 4.3)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = [
            f"{path}/{k}: only in {'the snapshot' if k in old else 'the new result'}"
            for k in sorted(set(old) ^ set(new))
            if k not in VOLATILE
        ]
        for k in sorted(set(old) & set(new) - VOLATILE):
            out += differences(old[k], new[k], f"{path}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} entries vs {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    if isinstance(old, float) and isinstance(new, float):
        same = (math.isnan(old) and math.isnan(new)) or math.isclose(old, new, rel_tol=1e-5, abs_tol=5e-6)
    else:
        same = type(old) is type(new) and old == new
    return [] if same else [f"{path}: {old!r} vs {new!r}"]
