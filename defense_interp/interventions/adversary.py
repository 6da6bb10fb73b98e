"""Adversarial perturbations of the residual stream (latent and embedding-space adversarial training).

`adversarial_perturbation` finds `δ` (`[batch, pos, d_model]`) that raises the response-token loss
when added at `blocks.{layer}.hook_{point}`, by projected gradient ascent:

    δ⁰ = 0;   δ^{k+1} = Π_ε( δ^k + η · g_t / ‖g_t‖ ),   g = ∂loss(δ^k)/∂δ

per token `t`, with `Π_ε` the projection of each token's `δ_t` onto the L2 ball `‖δ_t‖ ≤ ε` and
step size `η = 2.5 ε / steps` unless given. Only prompt tokens are perturbed (attended and not in
the response mask: the attack changes what the model reads, not the answer it is trained on);
`δ` is zero elsewhere. Parameter gradients are not touched (`torch.autograd.grad` w.r.t. `δ` only),
and the search runs with gradients enabled even inside `torch.no_grad()` (e.g. for loss tables).
`perturb` adds a fixed `δ` for the body of a `with` block.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from defense_interp.data.chat import ChatBatch
from defense_interp.errors import ConfigError
from defense_interp.interventions.hooks import hook_names, hooked, on_device
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import model_device, response_logits
from defense_interp.types import Model, check_finite

__all__ = ["adversarial_perturbation", "perturb"]


def _hook(model: Model, layer: int, point: str) -> str:
    return hook_names(model, [int(layer)], point)[int(layer)]


def perturb(model: Model, delta: Float[Tensor, "batch pos d_model"], *, layer: int, point: str = "resid_post"):
    """Context manager: add `delta` to `blocks.{layer}.hook_{point}` (same batch shape) in every forward pass."""
    name = _hook(model, layer, point)

    def hook(resid, hook):
        if resid.shape != delta.shape:
            raise ConfigError(f"the perturbation has shape {tuple(delta.shape)} but {name} has {tuple(resid.shape)}")
        return resid + on_device(delta, resid)

    return hooked(model, fwd=[(name, hook)])


def adversarial_perturbation(
    model: Model,
    batch: ChatBatch,
    *,
    layer: int,
    epsilon: float,
    steps: int,
    point: str = "resid_post",
    step_size: float | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """The L2-bounded perturbation of the module docstring (detached, float32, on the model's device)."""
    if check_finite(epsilon, "the adversary's epsilon") <= 0 or steps < 1:
        raise ConfigError(f"an adversary needs a finite epsilon > 0 and steps ≥ 1, got {epsilon} and {steps}")
    eta = 2.5 * epsilon / steps if step_size is None else float(step_size)
    dev = model_device(model)
    batch = batch.to(dev)
    where = (batch.attention_mask.bool() & ~batch.response_mask)[..., None].float()
    delta = torch.zeros(*batch.tokens.shape, int(model.cfg.d_model), device=dev, requires_grad=True)
    for _ in range(int(steps)):
        with perturb(model, delta, layer=layer, point=point), torch.enable_grad():
            loss = response_token_loss(*response_logits(model, batch))
            (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            g = g * where
            step = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            new = delta + eta * step
            new = new * (epsilon / new.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp_max(1.0)
        delta = new.requires_grad_(True)
    return delta.detach()
