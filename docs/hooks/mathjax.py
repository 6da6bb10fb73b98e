"""mkdocs hook: serve MathJax from the site itself, so that formulas render with no network.

MathJax 2.7 (its TeX input, HTML-CSS output and STIX-Web fonts) ships inside the PyPI wheel
`jupyter-server-mathjax`, which `make install` adds with `--no-deps` (only its static files are used;
the wheel is found without being imported, as its Jupyter server dependencies are absent). After the
build this hook copies those files to `javascripts/mathjax/` in the site.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

TARGET = "javascripts/mathjax"


def mathjax_folder() -> Path:
    """The folder holding `MathJax.js` in the installed `jupyter-server-mathjax` wheel."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    folder = (
        Path(next(iter(spec.submodule_search_locations))) / "static"
        if spec and spec.submodule_search_locations
        else None
    )
    if folder is None or not (folder / "MathJax.js").is_file():
        raise PluginError(
            "the formulas need MathJax from the wheel jupyter-server-mathjax: "
            "`pip install --no-deps jupyter-server-mathjax` (make install does)"
        )
    return folder


def on_post_build(config: Any, **kwargs: Any) -> None:
    shutil.copytree(mathjax_folder(), Path(config["site_dir"]) / TARGET, dirs_exist_ok=True)
