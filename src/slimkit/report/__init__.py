"""Reports: terminal tables and JSON."""

from slimkit.report.tables import comparison_table, human_bytes, human_count, profile_table

__all__ = ["comparison_table", "human_bytes", "human_count", "profile_table"]
