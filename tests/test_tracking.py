"""Live metrics: `defense-interp study --track tensorboard|wandb` (W&B offline, no network) write one
tracker run per training run, grouped by study, whose scalars equal the run's recorded numbers
(read back from the event files and the offline run files); without a tracker nothing is imported."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import defense_interp as di
from defense_interp.cli import main
from defense_interp.tracking import make_tracker

LABELS = ("baseline", "pps_a4", "ip")
STATS = ("pressure", "pressure_norm", "axis_share", "grad_norm", "projection")


def _study(out: Path, kind: str) -> None:
    assert main(["study", "--model", "tiny", "--steps", "2", "--out", str(out), "--track", kind]) == 0


def _recorded(out: Path, label: str) -> dict[str, list[float]]:
    run = di.Run.load(out / "seed0" / label)
    g = run.gradients
    i = g.layers.index(run.provenance["axes"]["layer"])
    return {"loss": list(run.losses), **{k: getattr(g, k)[:, i].tolist() for k in STATS}}


def test_tensorboard_scalars_equal_the_runs_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "study"
    _study(out, "tensorboard")
    group = out / "tracking" / "study"
    for label in LABELS:
        acc = EventAccumulator(str(group / "seed0" / label))
        acc.Reload()
        for key, values in _recorded(out, label).items():
            logged = [e.value for e in acc.Scalars(key)]
            assert logged == pytest.approx(values, rel=1e-6, abs=1e-9), (label, key)
        assert [e.step for e in acc.Scalars("loss")] == [0, 1]
        assert "summary/expression/after/projection" in acc.Tags()["scalars"]
    study = EventAccumulator(str(group / "study"))
    study.Reload()
    assert "findings" in study.Tags()["tensors"] or "findings/text_summary" in study.Tags()["tensors"]


def _wandb_records(path: Path) -> list:
    """The records of an offline W&B run file: LevelDB-style log blocks of 32 KiB after a 7-byte
    header, each record `crc32 (4) | length (2) | type (1) | data`, types full/first/middle/last."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, part = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            out.append(record)
    return out


def _finished_wandb_records(path: Path, timeout: float = 30.0) -> list:
    """The records of a run file once it holds the run's exit record: W&B's service process writes
    the file, and on a loaded machine its last records can land after `finish` has returned (bounded
    wait; after the timeout the records as they are)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_offline_runs_hold_the_runs_numbers(tmp_path):
    out = tmp_path / "study"
    _study(out, "wandb")
    runs = {}
    for path in (out / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"):
        records = _finished_wandb_records(path)
        (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
        history = [
            {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        runs[info.display_name] = (info.run_group, history)
    assert set(runs) == {*(f"seed0/{label}" for label in LABELS), "study"}
    assert {group for group, _ in runs.values()} == {"study"}
    for label in LABELS:
        history = runs[f"seed0/{label}"][1]
        for key, values in _recorded(out, label).items():
            assert [h[key] for h in history] == pytest.approx(values, rel=1e-6, abs=1e-9), (label, key)


def test_without_a_tracker_nothing_is_imported(tmp_path):
    script = (
        "import sys, torch, defense_interp as di; m = di.tiny_model(); t = di.Trait.builtin('evil'); "
        "cfg = di.TrainConfig(steps=1, batch_size=2, max_length=512, loss_examples=2, eval_questions=1, "
        "eval_max_new_tokens=2); "
        "axes = di.TraitAxes(torch.ones(m.cfg.n_layers, m.cfg.d_model), torch.ones(m.cfg.n_layers), layer=1); "
        f"di.train(m, t.train_data[:2], di.Baseline(), cfg, out={str(tmp_path / 'run')!r}, axes=axes, progress=False); "
        "bad = [k for k in sys.modules if k.split('.')[0] in ('wandb', 'tensorboard')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert not (tmp_path / "tracking").exists()


def test_bad_tracking_is_a_clear_error(tmp_path):
    with pytest.raises(di.ConfigError, match="trackers are"):
        make_tracker("mlflow", tmp_path, group="g")
    args = ["study", "--model", "tiny", "--out", str(tmp_path), "--track", "wandb", "--executor", "ray"]
    assert main(args) == 2  # --track reports the runs trained in this process
