"""`defense-interp trait list` (the bundled traits) and `defense-interp trait new` (a trait file
written by any OpenAI-compatible model, `judges.generate`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["trait_parsers"]


def trait_list(args: argparse.Namespace) -> None:
    from defense_interp.data.traits import Trait

    for name in Trait.builtins():
        t = Trait.builtin(name)
        print(f"{name:14s} {len(t.train_data):4d} training conversations  {t.description}")


def trait_new(args: argparse.Namespace) -> Path:
    from defense_interp.judges.generate import generate_trait

    out = Path(args.out or f"{args.name}.json")
    trait = generate_trait(
        args.name,
        args.description,
        args.generator,
        out=out,
        base_url=args.base_url,
        n_train=args.n_train,
        progress=True,
    )
    print(f"{out.resolve()}: {len(trait.pairs)} instruction pairs, {len(trait.questions)} questions, "
          f"{len(trait.eval_pairs)} eval pairs, {len(trait.train_data)} training conversations")  # fmt: skip
    return out


def trait_parsers(sub: Any) -> None:
    t = sub.add_parser("trait", help="list the bundled traits, or generate a trait file with a model")
    tsub = t.add_subparsers(dest="trait_command", required=True)
    ls = tsub.add_parser("list", help="the bundled traits")
    ls.set_defaults(func=trait_list)
    n = tsub.add_parser("new", help="write a trait file with any OpenAI-compatible model (the key: $OPENAI_API_KEY)")
    n.add_argument("name", help="the trait's name (letters, digits, _ and -)")
    n.add_argument("--description", required=True, help="the trait in a sentence or two")
    n.add_argument("--generator", required=True, help="openai:MODEL, served at --base-url (default: OpenAI's API)")
    n.add_argument("--base-url", default=None, help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    n.add_argument("--out", default=None, help="the trait file (default NAME.json; its reply cache beside it)")
    n.add_argument("--n-train", type=int, default=200, help="training conversations (default 200)")
    n.set_defaults(func=trait_new)
