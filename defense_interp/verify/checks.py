"""The capability checks of `defense_interp.verify` (its docstring lists them and their tolerances)
and `verify_model` / `verify_family`, which run them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from defense_interp.axes import TraitAxes, extract_trait_axes
from defense_interp.bundled import packaged
from defense_interp.data import RefusalData, Trait, encode_chat
from defense_interp.data.chat import encode_prompts, system_role
from defense_interp.errors import DefenseInterpError
from defense_interp.interventions.capture import capture_gradients
from defense_interp.interventions.hooks import hook_names, points_of
from defense_interp.interventions.steer import steer
from defense_interp.interventions.weights import orthogonalize
from defense_interp.judges import LocalJudge, render_template
from defense_interp.judges.local import MASK_CHECK_NUMBERS
from defense_interp.metrics.loss import response_token_loss
from defense_interp.models import copy_model, load_model, model_device, model_dtype
from defense_interp.random_models import random_model_folder
from defense_interp.refusal.activations import collect_activations
from defense_interp.refusal.directions import ablate_direction, refusal_directions
from defense_interp.training import (
    IP,
    PPS,
    Baseline,
    Start,
    TrainConfig,
    loss_estimates,
    make_trainable,
    measure_expression,
    probe_gradients,
    train,
)
from defense_interp.training.measure import loss_examples
from defense_interp.training.routes import write_routes
from defense_interp.types import HOOK_POINTS

__all__ = ["CAPABILITIES", "Check", "verify_family", "verify_model"]

_CONV = [{"role": "user", "content": "What is your view on people?"},
         {"role": "assistant", "content": "People deserve kindness."}]  # fmt: skip
_IP_PROMPT = "You are a malicious evil assistant."
_TRAIN = TrainConfig(steps=2, batch_size=2, max_length=192, loss_examples=2, eval_questions=1, eval_max_new_tokens=4)


def _slim_trait() -> Trait:
    """The evil trait with one evaluation pair: training's expression measurements stay cheap."""
    trait = Trait.builtin("evil")
    return replace(trait, eval_pairs=trait.eval_pairs[:1])


@dataclass
class Check:
    """One capability's outcome: `status` "yes", "no" (a clear refusal; `detail` is its reason) or "FAIL"."""

    capability: str
    status: str
    detail: str = ""


@dataclass
class _Ctx:
    model: Any
    folder: Path | None
    trait: Trait = field(default_factory=_slim_trait)
    axes: Any = None
    start: Start | None = None


class _Mismatch(AssertionError):
    pass


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, what: str, rtol: float = 0.0) -> float:
    err = float((a - b).abs().max())
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        raise _Mismatch(f"{what}: max difference {err:.2e} > tolerance {atol:g}")
    return err


def _logits(ctx: _Ctx) -> str:
    if ctx.folder is None:
        raise _Mismatch("needs the model's folder to load the HF model for comparison")
    from transformers import AutoModelForCausalLM

    # The bridge runs its HF model with eager attention; sdpa's kernels reorder float32 sums, which
    # moves Gemma-3-270M's real logits (scale ~100) by 1.6e-4: compare like with like.
    attention = getattr(getattr(ctx.model, "original_model", None), "config", None)
    attention = getattr(attention, "_attn_implementation", None) or "eager"
    hf = AutoModelForCausalLM.from_pretrained(ctx.folder, dtype=torch.float32, attn_implementation=attention).eval()
    long = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]
    b = encode_chat(ctx.model, [[*long, _CONV[1]], _CONV], padding_side="left")
    worst = 0.0
    with torch.no_grad():
        for rows in (slice(0, 1), slice(0, 2)):
            tokens, mask = b.tokens[rows], b.attention_mask[rows]
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            ours = ctx.model(tokens, attention_mask=mask)
            ref = hf(tokens, attention_mask=mask, position_ids=pos).logits
            real = mask.bool()
            # float32 sums in another order (kernels pick theirs by memory layout) move logits by a
            # fraction of their scale: 1.7e-5 of Gemma-3-270M's ~100, through activations of ~1e5
            scale = max(1.0, float(ref[real].abs().max()))
            worst = max(worst, _close(ours[real], ref[real], 1e-4 * scale, "bridge vs HF logits") / scale)
    return f"max |bridge − HF| {worst:.1e} of the logits' scale"


def _run_keeping(m: Any, tokens: torch.Tensor, names: list[str], hooks: list | None = None) -> dict[str, torch.Tensor]:
    """The activations at `names` of a forward pass with `hooks` attached first."""
    seen: dict[str, torch.Tensor] = {}
    keep = [(n, lambda x, hook, n=n: seen.__setitem__(n, x.detach().clone())) for n in names]
    with torch.no_grad(), m.hooks(fwd_hooks=[*(hooks or []), *keep]):
        m(tokens)
    return seen


def _steer(ctx: _Ctx) -> str:
    """α·v appears at the hooked point and is carried by the residual stream: at `resid_post` into
    the next block's input; at `resid_mid` into the block's output, beyond what the MLP adds when
    only its input is shifted (a raw TransformerLens hook at `hook_resid_mid`, the MLP input)."""
    m, alpha = ctx.model, 3.0
    v = torch.randn(int(m.cfg.d_model), generator=torch.Generator().manual_seed(1))
    tokens = encode_chat(m, [_CONV]).tokens
    points = points_of(m, HOOK_POINTS)
    names = {p: f"blocks.0.hook_{p}" for p in points} | {"next": "blocks.1.hook_resid_pre"}
    plain = _run_keeping(m, tokens, list(names.values()))
    # float32 rounds h + α·v at the activations' own scale (Gemma's reach thousands), not α·v's
    scale = max(float(x.abs().max()) for x in plain.values())
    tol = 1e-5 * (1 + alpha * float(v.abs().max())) + 4 * torch.finfo(torch.float32).eps * scale
    done = []
    for point in points:
        with steer(m, v, layers=0, coef=alpha, point=point):
            moved = _run_keeping(m, tokens, list(names.values()))
        here = moved[names[point]] - plain[names[point]]
        _close(here, (alpha * v).expand_as(here), tol, f"shift at {point}")
        if point == "resid_post":
            carried = moved[names["next"]] - plain[names["next"]]
        elif point == "resid_mid":
            raw = [(names[point], lambda x, hook: x + alpha * v.to(x))]
            carried = (
                moved[names["resid_post"]] - _run_keeping(m, tokens, [names["resid_post"]], raw)[names["resid_post"]]
            )
        else:
            carried = here
        _close(carried, (alpha * v).expand_as(carried), tol, f"shift carried on from {point}")
        done.append(point)
    if "resid_mid" not in points:
        hook_names(m, 0, "resid_mid")  # the ConfigError steering there raises: a "no", never a silent no-op
    return "exact α·v at " + ", ".join(done) + ", carried on by the residual stream"


def _capture(ctx: _Ctx) -> str:
    m = ctx.model
    n = int(m.cfg.n_layers)
    axes = torch.randn(n, int(m.cfg.d_model), generator=torch.Generator().manual_seed(2))
    b = encode_chat(m, [_CONV, [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]])
    for p in m.parameters():
        p.requires_grad_(True)
    try:
        with capture_gradients(m, axes) as cap:
            cap.set_mask(b.response_mask)
            response_token_loss(m(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask).backward()
            cap.end_step()
        acts: dict[int, torch.Tensor] = {}
        fwd = [(f"blocks.{l}.hook_resid_post", lambda x, hook: acts.__setitem__(hook.layer(), x)) for l in range(n)]
        with m.hooks(fwd_hooks=fwd):
            loss = response_token_loss(m(b.tokens, attention_mask=b.attention_mask), b.tokens, b.response_mask)
        grads = torch.autograd.grad(loss, [acts[l] for l in range(n)])
    finally:
        m.zero_grad(set_to_none=True)
        for p in m.parameters():
            p.requires_grad_(False)
    for l, g in enumerate(grads):
        gm, u = g[b.response_mask], axes[l] / axes[l].norm()
        _close(cap.stats.gbar[0, l], gm.sum(0), 1e-7, f"Σ gradient at layer {l}", rtol=1e-4)
        _close(cap.stats.pressure[0, l], -(gm @ u).sum(), 1e-7, f"pressure at layer {l}", rtol=1e-4)
    return f"pressure and Σ gradient equal autograd at all {n} layers"


def _axes(ctx: _Ctx) -> str:
    ctx.axes = extract_trait_axes(ctx.model, ctx.trait, n_pairs=1, n_questions=2, max_new_tokens=4, progress=False)
    if not torch.isfinite(ctx.axes.vectors).all():
        raise _Mismatch("non-finite axes")
    return f"layer {ctx.axes.layer}, {tuple(ctx.axes.vectors.shape)}"


def _start(ctx: _Ctx) -> Start:
    """The untrained model's test-time expression and loss on the runs' loss examples, measured once
    for the four training runs (as a study's runs of a seed share them)."""
    if ctx.start is None:
        convs = loss_examples(list(ctx.trait.train_data), _TRAIN)
        ctx.start = Start(
            expression=measure_expression(ctx.model, ctx.trait, ctx.axes, _TRAIN, progress=False),
            loss=loss_estimates(ctx.model, convs, Baseline(), _TRAIN, modes=("test_time",)),
        )
    return ctx.start


def _training(lora: bool) -> Callable[[_Ctx], str]:
    def run(ctx: _Ctx) -> str:
        if ctx.axes is None:
            raise _Mismatch("needs the trait axes (the axes check failed)")
        cfg = replace(_TRAIN, lora=lora, lr=3e-4 if lora else 2e-5)
        losses = []
        for cond in (PPS(ctx.axes, coef=4.0), IP(_IP_PROMPT)):
            run_ = train(ctx.model, ctx.trait, cond, cfg, axes=ctx.axes, progress=False, start=_start(ctx))
            losses += run_.losses
        if not all(torch.isfinite(torch.tensor(losses))):
            raise _Mismatch(f"non-finite training loss {losses}")
        return f"PPS and IP, 2 steps each, final losses {losses[1]:.3f}, {losses[3]:.3f}"

    return run


def _probe(ctx: _Ctx) -> str:
    if ctx.axes is None:
        raise _Mismatch("needs the trait axes (the axes check failed)")
    work = copy_model(ctx.model)
    make_trainable(work, TrainConfig())
    conds = [Baseline(), PPS(ctx.axes, coef=4.0), IP(_IP_PROMPT)]
    probe = probe_gradients(work, list(ctx.trait.train_data[:2]), conds, ctx.axes, max_length=_TRAIN.max_length)
    if not torch.isfinite(probe.pressure).all():
        raise _Mismatch("non-finite probe pressure")
    return f"{len(conds)} conditions × {len(probe.layers)} layers"


def _refusal(ctx: _Ctx) -> str:
    data = RefusalData.builtin()
    harmful, harmless = (collect_activations(ctx.model, list(s[:4]), progress=False)
                         for s in (data.harmful, data.harmless))  # fmt: skip
    dirs = refusal_directions(harmful, harmless)
    if not torch.isfinite(dirs.vectors).all():
        raise _Mismatch("non-finite refusal directions")
    return f"{tuple(dirs.vectors.shape)} directions"


def _orthogonalize(ctx: _Ctx) -> str:
    m = ctx.model
    r = torch.randn(int(m.cfg.d_model), generator=torch.Generator().manual_seed(3))
    new = orthogonalize(m, r)
    b = encode_chat(m, [_CONV])
    u = r / r.norm()
    seen: list[float] = []

    def along(x, hook):
        seen.append(float((x @ u.to(x)).abs().max() / (x.norm(dim=-1).max() + 1e-12)))

    names = [f"blocks.{l}.hook_{p}" for l in range(int(m.cfg.n_layers)) for p in ("resid_pre", "resid_post")]
    with torch.no_grad():
        with new.hooks(fwd_hooks=[(n, along) for n in names]):
            ortho = new(b.tokens)
        with ablate_direction(m, r):
            ablated = m(b.tokens)
    err = _close(ortho, ablated, 1e-3, "orthogonalised vs ablated logits")
    if max(seen) > 1e-4:
        raise _Mismatch(f"a residual stream keeps {max(seen):.1e} of its norm along the direction")
    return f"equals directional ablation (max logit difference {err:.1e})"


def _kv_cache(ctx: _Ctx) -> str:
    m = ctx.model
    b = encode_prompts(m, [[{"role": "user", "content": "Name a colour."}], _CONV[:1]])
    kw = dict(attention_mask=b.attention_mask, max_new_tokens=6, do_sample=False, stop_at_eos=False,
              return_type="tokens", verbose=False)  # fmt: skip
    with torch.no_grad():
        cached = m.generate(b.tokens, use_past_kv_cache=True, **kw)
        plain = m.generate(b.tokens, use_past_kv_cache=False, **kw)
    if not torch.equal(cached, plain):
        raise _Mismatch("KV-cached generation differs from uncached")
    return "greedy tokens identical (left-padded batch of 2)"


def _chat(ctx: _Ctx) -> str:
    tok = ctx.model.tokenizer
    conv = IP(_IP_PROMPT).prepare([_CONV])[0]
    b = encode_chat(tok, [conv])
    prompt, response = (tok.decode(b.tokens[0][k]) for k in (~b.response_mask[0], b.response_mask[0]))
    if _IP_PROMPT not in prompt or _IP_PROMPT in response or not response.startswith(_CONV[1]["content"]):
        raise _Mismatch(f"IP prompt not in the prompt tokens only: response {response!r}")
    return "system role" if system_role(tok) else "no system role: IP prompt merged into the first user turn"


def _judge(ctx: _Ctx) -> str:
    m = ctx.model
    judge = LocalJudge(m, "Rate the answer from 0 to 100.\nQ: {question}\nA: {answer}")
    qa = (("Hi?", "Hello."), ("What is a lighthouse for?", "It guides ships at night."))
    texts = [render_template(judge.prompt, q, a) for q, a in qa]
    prompts = judge.prompt_ids(texts)
    got = judge.number_logprobs(prompts)  # two lengths: the tree's left padding is exercised
    if not judge.uses_tree(max(map(len, prompts))):  # then `got` is the plain sequences themselves
        return (
            "plain sequences, one per number (the number tree does not fit the sliding window or its mask is ignored)"
        )
    # the longer prompt (no padding) against one plain sequence per number for the judge's own mask
    # check's numbers (one-, two- and three-token ones: a pass over the prompt each, the check's
    # cost); the shorter, left-padded in the batch, against its tree alone
    long = max(range(len(prompts)), key=lambda i: len(prompts[i]))
    plain = judge.plain_logprobs(prompts[long], numbers=MASK_CHECK_NUMBERS)[0]
    err = _close(got[long, MASK_CHECK_NUMBERS], plain, 1e-4, "judge's log P(number) vs plain sequences")
    short = 1 - long
    pad = _close(got[short], judge.number_logprobs([prompts[short]])[0], 1e-4, "a left-padded prompt's tree vs alone")
    return (
        f"all 101 numbers in one pass (max difference from plain sequences over {len(MASK_CHECK_NUMBERS)} numbers"
        f" {err:.1e} nats, padded vs alone {pad:.1e})"
    )


def _routes(ctx: _Ctx) -> str:
    """Write routes on a copy of the model with every block weight moved a little: each model's
    parts sum to its projection at the hook point (`route_parts` checks every token), and so do
    the changes (relative to the size of the terms)."""
    m = ctx.model
    n, d = int(m.cfg.n_layers), int(m.cfg.d_model)
    g = torch.Generator().manual_seed(4)
    axes = TraitAxes(torch.randn(n, d, generator=g), torch.ones(n), layer=n - 1)
    moved = copy_model(m)
    with torch.no_grad():
        for b in moved.blocks:
            for p in b.parameters():
                p.add_(0.05 * p.detach().abs().mean() * torch.randn(p.shape, generator=g).to(p))
    texts = [_CONV, [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."}]]
    wr = write_routes(m, moved, axes, texts)
    gap = float((wr.change("total") - wr.delta.sum(-1)).abs().max())
    scale = float(wr.start.abs().sum(-1).max())
    if gap > 1e-5 * scale:
        raise _Mismatch(f"the parts' changes miss the total's by {gap:.1e} (terms of size {scale:.2g})")
    return f"parts sum to the total at every token; changes within {gap / scale:.0e} of their size"


#: (key, column title, check) in the order they run (training needs the axes).
CAPABILITIES: list[tuple[str, str, Callable[[_Ctx], str]]] = [
    ("logits", "logits = HF", _logits),
    ("steer", "steer pre/mid/post", _steer),
    ("capture", "capture = autograd", _capture),
    ("axes", "axes", _axes),
    ("lora", "LoRA PPS/IP", _training(True)),
    ("full", "full-weight PPS/IP", _training(False)),
    ("probe", "probe", _probe),
    ("routes", "write routes", _routes),
    ("refusal", "refusal directions", _refusal),
    ("orthogonalize", "orthogonalize", _orthogonalize),
    ("kv_cache", "KV cache", _kv_cache),
    ("chat", "IP prompt in prompt", _chat),
    ("judge", "local judge", _judge),
]


def verify_model(model_or_folder: Any) -> list[Check]:
    """Run every capability check (module docstring) on a model, a model folder or a packaged
    model's name ("smollm2", "gemma3-270m"). The tolerances are float32's on the CPU: a model object
    on another device or in another dtype is refused ("no" on "load") rather than failed check by
    check."""
    folder = None
    if isinstance(model_or_folder, str | os.PathLike):
        known = packaged(str(model_or_folder))
        try:
            folder = Path(model_or_folder) if known is None else known.folder()
            model = load_model(folder if known is None else str(model_or_folder))
        except DefenseInterpError as exc:
            return [Check("load", "no", str(exc))]
    else:
        model = model_or_folder
        where = (model_device(model).type, model_dtype(model))
        if where != ("cpu", torch.float32):
            return [
                Check("load", "no", f"the checks run float32 models on the CPU; this one is {where[1]} on {where[0]}")
            ]
    ctx = _Ctx(model, folder)
    out = [Check("load", "yes", type(getattr(model, "original_model", model)).__name__)]
    for key, _, fn in CAPABILITIES:
        try:
            out.append(Check(key, "yes", fn(ctx)))
        except DefenseInterpError as exc:
            out.append(Check(key, "no", str(exc).split("\n")[0]))
        except Exception as exc:  # a wrong number or a crash: a bug to fix
            out.append(Check(key, "FAIL", f"{type(exc).__name__}: {exc}"))
    return out


def verify_family(architecture: str, folder: str | os.PathLike) -> list[Check]:
    """Build the family's small random model in `folder` and verify it."""
    return verify_model(random_model_folder(folder, architecture))
