"""Wall time of `defense-interp study --preset quick` on the bundled model (a fresh folder, so
nothing is reused), measured around the command in one process.

    python benchmarks/quick_study.py [--model tiny]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import emit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "defense_interp.cli", "study", "--preset", "quick", "--out", str(Path(tmp) / "q")]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
        wall = time.perf_counter() - t0
    emit(
        {
            "benchmark": "quick_study",
            "model": args.model or "bundled SmolLM2-135M-Instruct",
            "command": "defense-interp " + " ".join(cmd[3:6]) + " --out DIR",
            "wall_s": round(wall, 1),
        }
    )


if __name__ == "__main__":
    main()
