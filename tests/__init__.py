"""The test suite; `typecheck` is imported here so that jaxtyping's import hook can name it."""

from tests.support import typecheck  # noqa: F401
