"""The exception family of defense_interp.

Every error the toolkit raises on bad input is a `DefenseInterpError`; the message says what was
expected and how to fix it. Subclasses also derive from the matching builtin (`ValueError`, ...)
so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "DefenseInterpError", "ModelNotAvailableError", "NonFiniteError", "RunError"]


class DefenseInterpError(Exception):
    """Base class of every error raised by defense_interp on bad input or state."""


class ConfigError(DefenseInterpError, ValueError):
    """An argument is out of range or inconsistent (layer, hook point, coefficient, shape)."""


class DataError(DefenseInterpError, ValueError):
    """A dataset, conversation or trait file is empty, malformed or missing keys."""


class ModelNotAvailableError(DefenseInterpError, RuntimeError):
    """A model (or the bundled model wheel) cannot be found offline."""


class RunError(DefenseInterpError, RuntimeError):
    """A run folder is missing, incomplete, corrupted, or runs cannot be compared."""


class NonFiniteError(DefenseInterpError, ArithmeticError):
    """Training produced a NaN or infinite loss or gradient (the message names the step and where)."""
