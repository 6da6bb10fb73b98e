"""LoRA adapters on a 16-bit model are float32, so that small updates are not rounded away; and
`TrainConfig.lora_layers` puts them in the chosen blocks only, recorded and rebuilt with the run."""

from dataclasses import replace

import pytest
import torch

import defense_interp as di
from defense_interp.errors import ConfigError
from defense_interp.models import copy_model
from defense_interp.random_models import random_model
from defense_interp.training import TrainConfig, load_trained, make_trainable


def test_adapters_on_a_bfloat16_model_are_float32_and_keep_small_updates():
    model = random_model("LlamaForCausalLM", dtype=torch.bfloat16)
    trainable = make_trainable(model, TrainConfig())
    assert trainable and {p.dtype for _, p in trainable} == {torch.float32}
    lora_a = [p for n, p in trainable if "lora_A" in n]
    start = [p.detach().clone() for p in lora_a]
    opt = torch.optim.AdamW([p for _, p in trainable], lr=1e-5)
    tokens = torch.randint(0, int(model.cfg.d_vocab), (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # lora_B starts at 0, so lora_A's gradient is 0 until the first update
        logits = model(tokens)
        assert logits.dtype == torch.bfloat16  # the model itself still computes in 16 bits
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        opt.step()
    # an AdamW step of ~1e-5 on entries of ~0.05 is below bfloat16's rounding step (~2e-4 there)
    changed = torch.cat([(p.detach() != s).flatten() for p, s in zip(lora_a, start, strict=True)]).float().mean()
    assert changed > 0.99, f"only {changed:.0%} of the lora_A entries moved"


def test_lora_layers_put_adapters_in_the_chosen_blocks_only(tiny):
    n = int(tiny.cfg.n_layers)
    every = make_trainable(copy_model(tiny), TrainConfig())
    model = copy_model(tiny)
    last = make_trainable(model, TrainConfig(lora_layers=(n - 1, n - 1)))
    assert {id(p) for _, p in last} == {id(p) for name, p in model.blocks[n - 1].named_parameters() if "lora_" in name}
    assert last and len(every) == n * len(last)
    assert TrainConfig(lora_layers=(n - 1, 0)).lora_layers == (0, n - 1)
    with pytest.raises(ConfigError, match=f"names block {n}, but the model has {n} blocks"):
        make_trainable(copy_model(tiny), TrainConfig(lora_layers=(0, n)))
    for bad in ({"lora_layers": ()}, {"lora_layers": (-1,)}, {"lora_layers": (0,), "lora": False}):
        with pytest.raises(ConfigError, match="lora_layers must name at least one block"):
            TrainConfig(**bad)


def test_a_run_records_its_lora_layers_and_is_rebuilt_with_them(tiny, trait, random_axes, tmp_path):
    n = int(tiny.cfg.n_layers)
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, loss_examples=2, checkpoint_every=0, lora_layers=(n - 1,))
    kw = dict(axes=random_axes, progress=False)
    run = di.train(tiny, trait.train_data[:4], di.Baseline(), cfg, out=tmp_path / "last", **kw)
    # the activation gradients below the adapters are captured too, and at the first step (every
    # adapter adds 0 there) they are those of a run with adapters everywhere
    every = di.train(tiny, trait.train_data[:4], di.Baseline(), replace(cfg, lora_layers=None), **kw)
    assert run.gradients.layers == every.gradients.layers == tuple(range(n))
    for key in ("pressure", "grad_norm"):
        first, reference = getattr(run.gradients, key)[0], getattr(every.gradients, key)[0]
        torch.testing.assert_close(first, reference, rtol=1e-5, atol=1e-8)
        assert (first != 0).all()
    assert run.config["lora_layers"] == [n - 1] and "lora_layers" not in TrainConfig().to_dict()
    assert TrainConfig.from_dict(run.config) == cfg
    trained = load_trained(tiny, run)
    adapted = [b for b in range(n) if any("lora_" in name for name, _ in trained.blocks[b].named_parameters())]
    assert adapted == [n - 1]
    tokens = torch.randint(0, int(tiny.cfg.d_vocab), (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(trained(tokens), tiny(tokens))  # the trained adapters act
        assert torch.equal(load_trained(tiny, run, revert="all")(tokens), tiny(tokens))
    with pytest.raises(ConfigError, match="has lora_layers="):
        di.train(tiny, trait.train_data[:4], di.Baseline(), replace(cfg, lora_layers=None), init=run, **kw)
