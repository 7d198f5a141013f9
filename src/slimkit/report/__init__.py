"""Reports: terminal tables, and a compress run's ``report.json`` / ``report.md`` / ``report.html``.

`slimkit.report.files.write_reports` writes the report files (matplotlib is imported only
when figures are drawn); `slimkit.report.files.stage_table` is the 80-column terminal table
of ``slimkit compress``.
"""

from slimkit.report.tables import comparison_table, human_bytes, human_count, profile_table

__all__ = ["comparison_table", "human_bytes", "human_count", "profile_table"]
