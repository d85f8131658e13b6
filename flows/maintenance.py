"""Flow: cache housekeeping - delete expired rows, optionally rebuild the file (VACUUM).

Scheduled nightly without vacuum and weekly with it: VACUUM rewrites the whole file and needs
the write lock for its duration, so it runs when no ingest is scheduled (Sunday 03:00 ET).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows._common import choose_task_runner, markdown_code, markdown_table, publish_markdown, publish_table, resolve_db_path
from tasks.maintenance import cache_stats, cleanup_expired, vacuum_cache

__all__ = ["cache_maintenance", "stats_rows", "maintenance_summary_markdown"]

_STAT_ROWS = (
    ("bars", ("cache", "total_entries")),
    ("expired bars", ("cache", "expired_entries")),
    ("symbols", ("cache", "unique_symbols")),
    ("option contracts", ("options", "total_rows")),
    ("option snapshots", ("options", "snapshots")),
    ("trades", ("cache", "trade_entries")),
    ("file bytes", ("cache", "db_size_bytes")),
)


def stats_rows(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """``cache_stats`` before and after, as table rows ``metric / before / after / change``."""
    rows = []
    for label, (section, key) in _STAT_ROWS:
        b, a = before[section][key], after[section][key]
        rows.append({"metric": label, "before": b, "after": a, "change": a - b})
    return rows


def maintenance_summary_markdown(db: str, removed: int, vacuum: bool, reclaimed: int,
                                 rows: list[dict[str, Any]]) -> str:
    """The ``cache-maintenance-summary`` artifact."""
    return (
        f"## Cache maintenance\n\n- database: {markdown_code(db)}\n- expired rows removed: **{removed}**\n"
        f"- vacuum: {'yes' if vacuum else 'no'}, bytes reclaimed: **{reclaimed}**\n\n{markdown_table(rows)}\n"
    )


@flow(name="cache_maintenance", task_runner=choose_task_runner())
def cache_maintenance(vacuum: bool = False, db_path: str | None = None) -> dict[str, Any]:
    """Remove expired rows; with ``vacuum=True`` also reclaim the free pages of the file.

    Returns ``rows_removed``, ``bytes_reclaimed`` (0 without vacuum) and the stats before/after.
    """
    logger = get_run_logger()
    db = resolve_db_path(db_path)
    before = cache_stats(db)
    removed = cleanup_expired(db)["rows_removed"]
    reclaimed = vacuum_cache(db)["bytes_reclaimed"] if vacuum else 0
    after = cache_stats(db)
    rows = stats_rows(before, after)
    publish_markdown("cache-maintenance-summary", maintenance_summary_markdown(db, removed, vacuum, reclaimed, rows),
                     "cache_maintenance summary")
    publish_table("cache-maintenance-stats", rows, "cache statistics before and after maintenance")
    logger.info("maintenance of %s: %d row(s) removed, %d byte(s) reclaimed", db, removed, reclaimed)
    return {"status": "completed", "rows_removed": removed, "bytes_reclaimed": reclaimed, "vacuum": vacuum,
            "db_path": db, "before": before, "after": after}
