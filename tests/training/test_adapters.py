"""LoRA adapters on a 16-bit model are float32, so that small updates are not rounded away."""

import torch

from defense_interp.random_models import random_model
from defense_interp.training import TrainConfig, make_trainable


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
