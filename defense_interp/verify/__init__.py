"""End-to-end checks of a model architecture: what the architecture matrix runs on a small random
model of every verified family (`tests/models/test_matrix.py`), and what a user can run on a new
family before spending GPU hours:

    python -m defense_interp.verify FOLDER            # one model folder, a line per capability
    python -m defense_interp.verify gemma3-270m --record docs/real_weights.json   # real weights, recorded
    python -m defense_interp.verify --page docs/models.md   # every family; writes the support page

Each capability is "yes" (checked, numbers within the stated tolerance), "no" (the toolkit refuses
with a clear `DefenseInterpError`; its message is the reason) or "FAIL" (anything else: a crash or a
wrong number, a bug). Tolerances, float32 on the CPU:

* logits: bridge − HF model (with the bridge's attention implementation) ≤ 1e-4 · max(1, max |logit|),
  on an unpadded and a left-padded row (absolute for small logits; for real weights a fraction of
  their scale, since float32 kernels may sum in another order);
* steering: the hooked activation moves by exactly α·v (≤ 1e-5 · (1 + |α·v|) + 4ε·|h|, ε float32's
  machine epsilon and |h| the largest activation: rounding at the activations' scale) at resid_pre,
  resid_mid and resid_post, and the residual stream carries it on (`_steer`);
* gradient capture: pressure and Σ gradient equal `torch.autograd.grad` (relative 1e-4);
* write routes: on the model and a copy with moved block weights, the embedding, attention and MLP
  terms sum to the projection at the hook point at every token (≤ 1e-5 relative to the terms), and
  their changes to the change of the total;
* orthogonalised weights: logits equal those under directional ablation (≤ 1e-3 absolute), and
  every residual stream has no component along the direction (≤ 1e-4 relative);
* KV-cached greedy generation: the same tokens as uncached;
* local judge: `LocalJudge`'s log probabilities of the numbers 0–100 in a batch of two prompts
  equal one plain sequence per number for the longer prompt (the 21 one-, two- and three-token
  numbers of the judge's own mask check, `MASK_CHECK_NUMBERS`: a pass over the prompt each), and the
  shorter (left-padded) prompt's all equal its own alone (≤ 1e-4 nats each), with the number tree
  where the model honours its mask and the prompt and tree fit its sliding window.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from defense_interp.bundled import packaged
from defense_interp.random_models import FAMILIES
from defense_interp.verify.checks import CAPABILITIES, Check, verify_family, verify_model
from defense_interp.verify.page import read_real, record_real, render_page

__all__ = ["CAPABILITIES", "Check", "main", "read_real", "record_real", "render_page", "verify_family", "verify_model"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m defense_interp.verify", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="a model folder, or a packaged model (smollm2, gemma3-270m), to verify")
    ap.add_argument("--page", type=Path, help="verify every family and write the support page here")
    ap.add_argument(
        "--record", type=Path, help="add the model's real-weights checks to this record (the page reads it)"
    )
    args = ap.parse_args(argv)
    if args.page is not None:
        with tempfile.TemporaryDirectory() as tmp:
            results = {a: verify_family(a, Path(tmp) / a) for a in FAMILIES}
        args.page.write_text(render_page(results, read_real(args.page.parent / "real_weights.json")))
        return 0 if all(c.status != "FAIL" for cs in results.values() for c in cs) else 1
    if args.folder is None:
        ap.error("give a model folder or --page")
    checks = verify_model(args.folder)
    for c in checks:
        print(f"{c.capability:14s} {c.status:4s}  {c.detail}")
    if args.record is not None:
        known = packaged(args.folder)
        record_real(args.record, known.name if known is not None else str(args.folder), checks)
    return 0 if all(c.status != "FAIL" for c in checks) else 1
