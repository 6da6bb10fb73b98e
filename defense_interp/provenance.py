"""What every result records about the software that made it: the package version and the
versions of the libraries its numbers depend on."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DEPENDENCIES", "__version__", "package_versions"]

__version__ = "0.1.0"

#: The packages a run's numbers depend on (recorded by every training run).
DEPENDENCIES = ("defense_interp", "torch", "transformer_lens", "transformers", "peft", "numpy")


def package_versions() -> dict[str, str]:
    """Installed versions of `DEPENDENCIES` ("not installed" where one is missing)."""
    out = {}
    for pkg in DEPENDENCIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
