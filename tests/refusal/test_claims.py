"""The R1–R5 rules (`refusal.claims`) on planted studies: reproduced, not reproduced,
inconclusive and precondition failed, for every claim; and the tiny full preset end to end."""

import json
from types import SimpleNamespace

import torch

from defense_interp.claims import PRECONDITION_FAILED
from defense_interp.refusal.claims import assess_refusal

MODELS = ("base", "ssft", "at", "lat")
N_PROMPTS, N_LAYERS = 20, 9


def rate(share: float, shift: int = 0):
    """A refusal rate over the attack prompts: the first round(share · n) prompts (rotated) refused."""
    k = round(share * N_PROMPTS)
    hits = [100.0 if (i + shift) % N_PROMPTS < k else 0.0 for i in range(N_PROMPTS)]
    return SimpleNamespace(scores=hits, rate=SimpleNamespace(mean=k / N_PROMPTS))


def svd(top2: float):
    """An SVD whose top-2 share is `top2` (split 60/40 over the first two components)."""
    ratios = torch.tensor([0.6 * top2, 0.4 * top2, 1 - top2])
    return ratios


def study(seed: int, shares: dict, unattacked: dict, removal: dict, noise: float = 0.0, harmless: float = 0.1):
    """A single-seed study: `shares[m] = (uncentred, centred, without outliers)` top-2 shares at every
    layer; `unattacked[m]` refusal; `removal[(s, m)]` the share of m's refusal that s's direction removes;
    `harmless` every model's refusal of the harmless attack prompts."""
    g = torch.Generator().manual_seed(seed)
    analyses = {}
    for m in MODELS:
        jitter = noise * float(torch.randn(1, generator=g))
        unc, cen, out = (x + jitter for x in shares[m])
        layer_svd = SimpleNamespace(
            explained=svd(unc), explained_centered=svd(cen), explained_without_outliers=svd(out)
        )
        analyses[m] = SimpleNamespace(
            svd=(layer_svd,) * N_LAYERS,
            directions=SimpleNamespace(layers=tuple(range(N_LAYERS))),
            selection=SimpleNamespace(chosen=(4, -1)),
        )
    base = [rate(unattacked[m]) for m in MODELS]
    rates = [[rate(unattacked[m] * (1 - removal.get((s, m), 0.0)), shift=seed) for m in MODELS] for s in MODELS]
    transfer = SimpleNamespace(sources=MODELS, targets=MODELS, rates=rates, baseline=base)
    return SimpleNamespace(
        analyses=analyses,
        transfer=transfer,
        harmless_rates={m: rate(harmless, shift=seed) for m in MODELS},
        runs={m: SimpleNamespace(provenance={"matching": [{"step": 12, "refusal": 0.9}]}) for m in MODELS[1:]},
        config=SimpleNamespace(seed=seed),
        model={"name": "planted"},
    )


LAT_PATTERN = {  # LAT's own direction removes most of its refusal, others' directions little; LAT's removes others'
    **{(m, m): 0.3 for m in ("base", "ssft", "at")},
    ("lat", "lat"): 0.9,
    **{("lat", m): 0.8 for m in ("base", "ssft", "at")},
    **{(s, m): 0.1 for s in ("base", "ssft", "at") for m in MODELS if s != m},
}
HIGH = {m: 0.9 for m in MODELS}


def verdicts(studies, **kw):
    return [f.verdict for f in assess_refusal(studies, **kw).findings]


def test_every_claim_reproduced_on_a_planted_lat_effect():
    shares = {"base": (0.3, 0.2, 0.25), "ssft": (0.3, 0.2, 0.25), "at": (0.32, 0.22, 0.27), "lat": (0.6, 0.5, 0.55)}
    studies = [study(s, shares, HIGH, LAT_PATTERN, noise=0.01) for s in range(3)]
    findings = assess_refusal(studies)
    assert [f.verdict for f in findings.findings] == ["reproduced"] * 5
    assert "survives R2: yes" in findings.findings[0].rule
    assert findings.findings[0].tests[0].effect.over.startswith("seeds")
    json.dumps(findings.to_dict())  # JSON-safe


def test_not_reproduced_when_the_effects_are_reversed():
    shares = {"base": (0.6, 0.5, 0.55), "ssft": (0.6, 0.5, 0.55), "at": (0.6, 0.5, 0.55), "lat": (0.3, 0.2, 0.25)}
    reversed_pattern = {  # SSFT and AT are the vulnerable ones; LAT's direction transfers worst
        ("lat", "lat"): 0.1,
        **{(m, m): 0.9 for m in ("base", "ssft", "at")},
        **{(s, m): 0.8 for s in ("base", "ssft", "at") for m in MODELS if s != m},
        **{("lat", m): 0.05 for m in ("base", "ssft", "at")},
    }
    studies = [study(s, shares, HIGH, reversed_pattern, noise=0.01) for s in range(3)]
    assert verdicts(studies) == ["not reproduced"] * 5


def test_inconclusive_with_one_seed_for_the_svd_claims_and_with_noise():
    shares = {"base": (0.3, 0.2, 0.25), "ssft": (0.3, 0.2, 0.25), "at": (0.32, 0.22, 0.27), "lat": (0.6, 0.5, 0.55)}
    one = assess_refusal([study(0, shares, HIGH, LAT_PATTERN)])
    assert [f.verdict for f in one.findings[:2]] == ["inconclusive", "inconclusive"]  # one value per model
    assert one.findings[2].tests[0].effect.over.startswith("attack prompts")  # rates: paired by prompt
    noisy = [study(s, {m: (0.4, 0.3, 0.35) for m in MODELS}, HIGH, {}, noise=0.05) for s in range(3)]
    assert verdicts(noisy)[:2] == ["inconclusive", "inconclusive"]


def test_r1_without_r2_is_flagged_as_an_artefact():
    """LAT's uncentred share is higher only through outlier channels (the LAT paper's stored
    Llama-2 activations look like this): R1 reproduced, R2 not, and R1 says it does not survive R2."""
    shares = {"base": (0.3, 0.3, 0.3), "ssft": (0.3, 0.3, 0.3), "at": (0.3, 0.3, 0.3), "lat": (0.7, 0.2, 0.2)}
    findings = assess_refusal([study(s, shares, HIGH, LAT_PATTERN, noise=0.01) for s in range(3)]).findings
    assert findings[0].verdict == "reproduced" and findings[1].verdict == "not reproduced"
    assert "survives R2: no" in findings[0].rule


def test_r3_to_r5_fail_their_precondition_when_a_variant_does_not_refuse():
    shares = {m: (0.4, 0.3, 0.35) for m in MODELS}
    low = {**HIGH, "ssft": 0.5}
    findings = assess_refusal([study(s, shares, low, LAT_PATTERN, noise=0.01) for s in range(3)]).findings
    assert [f.verdict for f in findings[2:]] == [PRECONDITION_FAILED] * 3
    note = findings[2].tests[-1].note
    assert "SSFT refuses 50% of the attack split (seed 0; training stopped at step 12 refusing 90%" in note
    relaxed = [study(s, shares, low, LAT_PATTERN, noise=0.01) for s in range(3)]
    assert verdicts(relaxed, target=0.5)[2:] == ["reproduced"] * 3


def test_tiny_full_preset_runs_end_to_end(tmp_path):
    from defense_interp.cli import main

    out = tmp_path / "refusal"
    assert main(["refusal", "--model", "tiny", "--preset", "full", "--out", str(out)]) == 0
    findings = json.loads((out / "refusal_findings.json").read_text())
    assert [f["title"].split()[0] for f in findings["findings"]] == ["R1", "R2", "R3", "R4", "R5"]
    assert findings["provenance"]["seeds"] == [0, 1, 2]
    assert all((out / f"seed{s}" / "refusal.json").is_file() for s in range(3))
    configs = [json.loads((out / f"seed{s}" / "refusal.json").read_text())["config"]["seed"] for s in range(3)]
    assert configs == [0, 1, 2]
    report = (out / "report.html").read_text()
    assert report.index("Findings") < report.index("Summary per seed")
    # matched training: each variant checked on the selection split every 4 steps, up to the cap of 8
    run = json.loads((out / "seed1" / "runs" / "lat" / "run.json").read_text())
    assert [c["step"] for c in run["provenance"]["matching"]] == [4]
    stopped = run["provenance"]["stopped_at"]
    assert (stopped is None and len(run["losses"]) == 8) or (stopped == 4 and len(run["losses"]) == 4)


def test_r3_reports_each_variants_discrimination_as_uncounted_context():
    """Refusing harmless prompts as often as harmful ones shows in R3's context sub-tests (harmful −
    harmless refusal near 0) without changing any verdict."""
    shares = {"base": (0.3, 0.2, 0.25), "ssft": (0.3, 0.2, 0.25), "at": (0.32, 0.22, 0.27), "lat": (0.6, 0.5, 0.55)}
    for harmless, effect, verdict in ((0.1, 0.8, "reproduced"), (0.9, 0.0, "inconclusive")):
        studies = [study(s, shares, HIGH, LAT_PATTERN, noise=0.01, harmless=harmless) for s in range(3)]
        findings = assess_refusal(studies).findings
        assert [f.verdict for f in findings] == ["reproduced"] * 5
        context = [t for t in findings[2].tests if not t.counted]
        assert [t.name.split(":")[0] for t in context] == ["SSFT", "AT", "LAT"]
        assert all(abs(t.effect.mean - effect) < 1e-9 and t.verdict == verdict for t in context)
