"""Self-contained HTML reports."""

from defense_interp.report.html import write_report

__all__ = ["write_report"]
