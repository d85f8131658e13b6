"""Flow: cache housekeeping - delete expired rows, optionally rebuild the file (VACUUM).

Scheduled nightly without vacuum and weekly with it: VACUUM rewrites the whole file and needs
the write lock for its duration, so it runs when no ingest is scheduled (Sunday 03:00 ET).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from cachelib.maintenance import MaintenanceResult, StatRow
from flows._common import (
    choose_task_runner,
    display_db,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from tasks.maintenance import cache_stats, cleanup_expired, vacuum_cache

__all__ = ["cache_maintenance", "maintenance_summary_markdown"]


def maintenance_summary_markdown(db: str, removed: int, vacuum: bool, reclaimed: int, rows: list[StatRow]) -> str:
    """The ``cache-maintenance-summary`` artifact."""
    return (
        f"## Cache maintenance\n\n- database: {markdown_code(display_db(db))}\n- expired rows removed: **{removed}**\n"
        f"- vacuum: {'yes' if vacuum else 'no'}, bytes reclaimed: **{reclaimed}**\n\n{markdown_table(rows)}\n"
    )


@flow(name="cache_maintenance", task_runner=choose_task_runner())
def cache_maintenance(vacuum: bool = False, db_path: str | None = None) -> MaintenanceResult:
    """Remove expired rows; with ``vacuum=True`` also reclaim the free pages of the file.

    Returns the rows removed, the bytes reclaimed (0 without vacuum) and the stats before/after.
    """
    db = resolve_db_path(db_path)
    before = cache_stats(db)
    removed = cleanup_expired(db)
    reclaimed = vacuum_cache(db) if vacuum else 0
    result = MaintenanceResult(db, removed, vacuum, reclaimed, before, cache_stats(db))
    publish_markdown("cache-maintenance-summary",
                     maintenance_summary_markdown(db, removed, vacuum, reclaimed, result.rows),
                     "cache_maintenance summary")
    publish_table("cache-maintenance-stats", result.rows, "cache statistics before and after maintenance")
    get_run_logger().info("maintenance of %s: %d row(s) removed, %d byte(s) reclaimed", display_db(db), removed, reclaimed)
    return result
