"""Refusal curves of the refusal study's variants: the refusal rate on the harmful and on the
harmless *selection* split (substring rule, greedy, the study's `sweep_new_tokens` answers) every
`check_every` steps of training, never stopping early — what matched training (`match_target`,
`harmless_bound`) sees, over the whole step budget, so the trade-off between refusing harmful
requests and answering harmless ones is visible. The study's own code trains each variant
(`refusal.tasks.condition`: SSFT, AT and LAT with the preset's ε rule) on its data and splits.

    python benchmarks/refusal_curves.py [--variants ssft at lat] [--steps 48] [--lr 1e-3] [--batch-size 4]
                                        [--lr-schedule constant|linear|cosine] [--full-fine-tuning] [--seed 0]
                                        [--extra-train FILE.jsonl ...] [--harmless-repeats K] [--comply-prefix TEXT]
                                        [--epsilon-fraction F] [--lat-layer L] [--harmless-own-answers TOKENS]
                                        [--on-train] [--lora-layers FIRST-LAST] [--model ...]

`--extra-train` adds chat JSONL conversations to the bundled training data (a pilot of more data;
`data/refusal_near_miss.jsonl`: 128 harmless requests that share a harmful request's words;
`data/refusal_twins.jsonl`: one harmless twin of each of the 64 refusing training requests, its
words and form with a harmless aim, answered);
`--lr-schedule` decays the learning rate over the steps (`TrainConfig.lr_schedule`);
`--full-fine-tuning` trains every weight instead of rank-8 LoRA adapters (give a smaller `--lr`);
`--harmless-repeats K` puts each complying (harmless) training conversation K times in the training
data, so the harmless half's share of the draws — its weight in the expected loss, up to each
batch's token normalisation — grows from 256/320 to 256K/(64 + 256K) on the bundled data (the halves
are told apart by the study's substring rule on the training answer, which matches the files' labels
there); `--comply-prefix` puts the same opening ("Sure! ") before every complying answer;
`--epsilon-fraction` and `--lat-layer` replace the preset's ε rule fraction and LAT's layer;
`--harmless-own-answers TOKENS` replaces each complying answer by the untrained model's own greedy
answer of up to TOKENS tokens (kept as written where that answer is empty or the substring rule
counts it as a refusal), so the harmless half anchors the model's own behaviour instead of teaching
new text (cached under `benchmarks/results/own_answers/`); `--on-train` also checks 16 harmful and 16
harmless prompts of the training data (spread over it), to tell a model that does not fit the
training data's split from one that does not carry it to held-out prompts; `--lora-layers 22-29` puts
the adapters in those blocks only (`TrainConfig.lora_layers`), e.g. the blocks after the layer where
`refusal_separability.py` reads harmful from harmless prompts in the untrained model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _setup import emit, load, model_args

from defense_interp.axes import TraitAxes
from defense_interp.data.chat import Conversation
from defense_interp.data.loaders import load_chat_jsonl
from defense_interp.data.refusal import RefusalData
from defense_interp.refusal import REFUSAL_PRESETS
from defense_interp.refusal.attack import refusal_rate
from defense_interp.refusal.judges import is_refusal
from defense_interp.refusal.tasks import condition
from defense_interp.screening import own_answers
from defense_interp.training import TrainConfig, load_trained, train
from defense_interp.training.config import LR_SCHEDULES
from defense_interp.types import Model


def block_range(text: str) -> tuple[int, ...]:
    """`"22-29"` → blocks 22 to 29; `"5"` → block 5."""
    first, _, last = text.partition("-")
    try:
        return tuple(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST block numbers such as 22-29, got {text!r}") from None


def with_own_answers(model: Model, convs: tuple[Conversation, ...], tokens: int) -> tuple[Conversation, ...]:
    """Each complying conversation with the model's own greedy answer, where that answer is a
    non-empty non-refusal; refusing conversations unchanged."""
    at = [i for i, c in enumerate(convs) if not is_refusal(c[-1]["content"])]
    cache = Path(__file__).parent / "results" / "own_answers"
    own = own_answers(model, [convs[i] for i in at], max_new_tokens=tokens, cache=cache, progress=False)
    out = list(convs)
    for i, answer in zip(at, own, strict=True):
        if answer.strip() and not is_refusal(answer):
            out[i] = [*convs[i][:-1], {**convs[i][-1], "content": answer.strip()}]
    print(f"own answers replace {sum(a is not b for a, b in zip(out, convs, strict=True))} of {len(at)}", flush=True)
    return tuple(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    model_args(ap)
    ap.add_argument("--variants", nargs="+", default=["ssft", "at", "lat"], choices=["ssft", "at", "lat"])
    ap.add_argument("--preset", default="full", choices=sorted(REFUSAL_PRESETS))
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's cap)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=None, help="conversations per step (default: the preset's)")
    ap.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES, help="learning rate over the steps")
    ap.add_argument("--full-fine-tuning", action="store_true", help="train every weight, not LoRA adapters")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra-train", nargs="+", default=[], help="chat JSONL files added to the training data")
    ap.add_argument("--harmless-repeats", type=int, default=1, help="copies of each complying training conversation")
    ap.add_argument("--comply-prefix", default="", help="text put before every complying training answer")
    ap.add_argument("--epsilon-fraction", type=float, default=None, help="AT's and LAT's ε rule fraction")
    ap.add_argument("--lat-layer", type=int, default=None, help="LAT's perturbed layer (default: the preset's)")
    ap.add_argument("--on-train", action="store_true", help="also check 16 harmful and 16 harmless training prompts")
    ap.add_argument("--lora-layers", type=block_range, default=None, help="blocks with adapters, FIRST-LAST")
    ap.add_argument("--harmless-own-answers", type=int, default=0, metavar="TOKENS",
                    help="replace each complying answer by the untrained model's own greedy answer")  # fmt: skip
    args = ap.parse_args()
    model = load(args)
    cfg = REFUSAL_PRESETS[args.preset]
    cfg = replace(
        cfg,
        seed=args.seed,
        steps=args.steps or cfg.steps,
        lr=args.lr or cfg.lr,
        batch_size=args.batch_size or cfg.batch_size,
        match_target=None,
        harmless_bound=None,
        epsilon_fraction=cfg.epsilon_fraction if args.epsilon_fraction is None else args.epsilon_fraction,
        lat_layer=cfg.lat_layer if args.lat_layer is None else args.lat_layer,
    )
    if args.harmless_repeats < 1:
        ap.error("--harmless-repeats must be at least 1")
    data = RefusalData.builtin()
    convs = data.train + tuple(c for f in args.extra_train for c in load_chat_jsonl(f))
    if args.comply_prefix:  # the same opening for every complying answer
        convs = tuple(
            c
            if is_refusal(c[-1]["content"])
            else [*c[:-1], {**c[-1], "content": args.comply_prefix + c[-1]["content"]}]
            for c in convs
        )
    if args.harmless_own_answers:
        convs = with_own_answers(model, convs, args.harmless_own_answers)
    complying = tuple(c for c in convs if not is_refusal(c[-1]["content"]))
    data = replace(data, train=convs + complying * (args.harmless_repeats - 1))  # K = 1: the data as it is
    harmful, harmless = data.splits(cfg.splits, seed=cfg.seed)[1]
    sets = {"harmful": harmful, "harmless": harmless}
    if args.on_train:  # 16 of each half of the training data, spread over it: fitting against generalising
        for half, refuses in (("harmful", True), ("harmless", False)):
            asked = [c[-2]["content"] for c in convs if is_refusal(c[-1]["content"]) == refuses]
            sets[f"train {half}"] = asked[:: max(1, len(asked) // 16)][:16]
    tcfg = TrainConfig(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, max_length=cfg.max_length,
        check_every=cfg.check_every, lr_schedule=args.lr_schedule, lora=not args.full_fine_tuning,
        lora_layers=args.lora_layers, capture_layers=(int(model.cfg.n_layers) - 1,),
    )  # fmt: skip
    # train() records gradient statistics along an axis; the curves use none, so any axis will do, and
    # one layer at the top (the backward pass need not go below the lowest adapter for them)
    n, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    axes = TraitAxes(torch.randn(n, d, generator=torch.Generator().manual_seed(0)), torch.ones(n), layer=n - 1)
    curves = {}
    for label in args.variants:
        points: list[dict[str, float]] = []

        def record(m: object, step: int, points: list = points, label: str = label) -> bool:
            rates = {
                k: refusal_rate(m, s, max_new_tokens=cfg.sweep_new_tokens, progress=False).rate.mean
                for k, s in sets.items()
            }
            points.append({"step": step, **rates})
            print(f"{label} step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()), flush=True)
            return False

        started = time.time()
        record(model, 0)
        with tempfile.TemporaryDirectory() as tmp:
            variant = condition(model, data, cfg, label)
            run = train(model, list(data.train), variant, tcfg, out=Path(tmp), axes=axes, progress=False, until=record)
            record(load_trained(model, run), cfg.steps)
        curves[label] = {"points": points, "seconds": round(time.time() - started, 1)}
    emit(
        {
            "benchmark": "refusal_curves",
            "what": "refusal rate (substring rule, greedy) on the selection split's harmful and harmless prompts "
            f"({len(harmful)} each{', and on 16 of each half of the training data' if args.on_train else ''}) "
            f"every {cfg.check_every} steps",
            "config": cfg.to_dict(),
            "lr_schedule": args.lr_schedule,
            "lora": not args.full_fine_tuning,
            "lora_layers": args.lora_layers,
            "train_conversations": len(data.train),
            "refusing_train_conversations": len(convs) - len(complying),
            "harmless_repeats": args.harmless_repeats,
            "comply_prefix": args.comply_prefix,
            "extra_train": args.extra_train,
            "harmless_own_answers": args.harmless_own_answers,
            "curves": curves,
        }
    )


if __name__ == "__main__":
    main()
