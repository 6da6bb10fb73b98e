"""The run-time checker of the package's annotations under pytest (jaxtyping's import hook calls it,
see `addopts` in pyproject.toml): beartype with the numeric tower, so an `int` is a valid `float`
as Python's typing rules say (`PPS(axes, coef=4)`)."""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
