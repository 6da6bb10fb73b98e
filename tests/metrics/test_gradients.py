"""The gradient edits of `metrics.gradients` on planted gradients: the promised sign along the axis,
the orthogonal part untouched, a fixed magnitude."""

import pytest
import torch

from defense_interp.metrics import edit_gradient


@pytest.mark.parametrize("mode,sign", [("neutralize", 0), ("attenuate", 1), ("amplify", -1)])
def test_edited_gradient_has_promised_sign_and_same_orthogonal_part(mode, sign):
    g = torch.randn(3, 5, 16, dtype=torch.float64)
    u = torch.randn(16, dtype=torch.float64)
    uh = u / u.norm()
    out = edit_gradient(g, u, mode)
    c_old, c_new = g @ uh, out @ uh
    perp = lambda x: x - (x @ uh)[..., None] * uh  # noqa: E731
    torch.testing.assert_close(perp(out), perp(g), rtol=0, atol=1e-12)
    # the update −g moves the projection by −⟨g, û⟩: attenuate lowers it, amplify raises it
    torch.testing.assert_close(c_new, sign * c_old.abs(), rtol=0, atol=1e-12)
    assert out.dtype == g.dtype and g.shape == out.shape


def test_fixed_magnitude_edit():
    g = torch.randn(4, 6)
    u = torch.zeros(6)
    u[0] = 2.0
    assert torch.allclose(edit_gradient(g, u, "attenuate", magnitude=0.5)[:, 0], torch.full((4,), 0.5))
    assert torch.allclose(edit_gradient(g, u, "amplify", magnitude=0.5)[:, 0], torch.full((4,), -0.5))
    with pytest.raises(ValueError, match="neutralize"):
        edit_gradient(g, u, "flip")
