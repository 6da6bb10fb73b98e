"""`defense-interp svd`: the difference-SVD report of activations saved by other tools."""

import json

import pytest
import torch

from defense_interp.cli import main
from defense_interp.errors import ConfigError, DataError
from defense_interp.metrics import difference_svd
from defense_interp.refusal.stored import load_activations, stored_svd


def planted(tmp_path, dtype=torch.float32, n=24, d=48):
    """Harmful/harmless activations whose differences hold one strong direction and one massive channel."""
    g = torch.Generator().manual_seed(0)
    harmless = torch.randn(n, d, generator=g)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    harmful = harmless + 6.0 * direction + 0.3 * torch.randn(n, d, generator=g)
    harmful[:, 5] += 40.0  # a massive-activation channel
    a, b = tmp_path / f"harmful_{dtype}.pt", tmp_path / f"harmless_{dtype}.pt"
    torch.save(harmful.to(dtype), a)
    torch.save(harmless.to(dtype), b)
    return a, b, harmful.to(dtype), harmless.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_stored_pairs_give_the_svd_of_their_differences(tmp_path, dtype):
    a, b, harmful, harmless = planted(tmp_path, dtype)
    (r,) = stored_svd([(a, b)], ["planted"])
    ref = difference_svd(harmful, harmless)
    assert r.dtype == str(dtype).removeprefix("torch.")
    assert torch.allclose(r.svd.explained, ref.explained)
    assert r.svd.outlier_channels[0] == 5  # the planted massive channel is found
    assert float(r.svd.explained_without_outliers[0]) < float(r.svd.explained[0])


def test_the_command_writes_json_and_a_report(tmp_path, capsys):
    a16, b16, *_ = planted(tmp_path, torch.float16)
    a32, b32, *_ = planted(tmp_path, torch.float32)
    out = tmp_path / "out"
    assert main(["svd", str(a16), str(b16), str(a32), str(b32), "--labels", "fp16", "fp32", "--out", str(out)]) == 0
    saved = json.loads((out / "svd.json").read_text())
    assert [p["label"] for p in saved["pairs"]] == ["fp16", "fp32"]
    assert saved["pairs"][0]["outlier_channels"][0] == 5
    assert abs(saved["pairs"][0]["explained"][0] - saved["pairs"][1]["explained"][0]) < 1e-2  # fp16 rounding only
    assert "Explained energy of the differences" in (out / "report.html").read_text()
    assert "fp16: top-1 uncentred" in capsys.readouterr().out


def test_bad_files_are_data_errors(tmp_path, users_view):
    a, b, harmful, _ = planted(tmp_path)
    short = tmp_path / "short.pt"
    torch.save(harmful[:10], short)
    with pytest.raises(DataError, match="rows must pair up"):
        stored_svd([(a, short)])
    for bad, match in (
        (torch.zeros(3, 4, 5), "expected"),
        (torch.zeros(4, 8, dtype=torch.long), "expected"),
        ({"a": torch.zeros(4, 8), "b": torch.zeros(4, 8)}, "2 tensors"),
        ([1, 2], "not a tensor"),
        (torch.full((4, 8), float("nan")), "NaN"),
    ):
        path = tmp_path / "bad.pt"
        torch.save(bad, path)
        with pytest.raises(DataError, match=match):
            load_activations(path)
    (tmp_path / "text.pt").write_text("not a tensor file")
    with pytest.raises(DataError, match=r"torch\.save"):
        load_activations(tmp_path / "text.pt")
    with pytest.raises(ConfigError):
        stored_svd([(a, b)], ["one", "two"])
    assert main(["svd", str(a), "--out", str(tmp_path / "o")]) == 2  # an odd number of files
