"""Flow: the weekly data-quality check - ``cache-manager doctor`` as a scheduled run.

It calls :func:`cachelib.doctor.diagnose` (every check lives there) and publishes the
findings, each with its repair command, as the ``data-quality-report`` markdown artifact.
The run completes whatever it finds (the findings are the result); errors are logged at
ERROR level so they stand out in the run's logs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from cachelib.doctor import Report, diagnose, location_option, sessions_text
from cachelib.store import TradingCacheManager
from flows._common import display_db, markdown_code, markdown_table, publish_markdown, resolve_db_path

__all__ = ["data_quality", "data_quality_markdown", "FINDINGS_LISTED"]

#: At most this many findings are listed in the artifact (the counts cover them all).
FINDINGS_LISTED = 200


def data_quality_markdown(db: str, report: Report) -> str:
    """The ``data-quality-report`` artifact: counts, then one row per finding."""
    counts = report.counts
    rows = [
        {
            "severity": f.severity,
            "check": f.check,
            "series": str(f.series or "-"),
            "sessions": sessions_text(f.sessions),
            "problem": f.message,
            "repair": markdown_code(f.repair) if f.repair else "-",
        }
        for f in report.findings[:FINDINGS_LISTED]
    ]
    more = len(report.findings) - len(rows)
    tail = f"\n\n_{more} more finding(s) not listed: run `cache-manager doctor` for all._" if more > 0 else ""
    return (
        f"## Data quality\n\n- database: {markdown_code(display_db(db))} ({report.engine})\n"
        f"- checked: {report.series_checked} series, {report.option_snapshots_checked} option snapshots\n"
        f"- integrity: {report.integrity}\n- errors: **{counts['error']}**, warnings: **{counts['warning']}**\n\n"
        f"{markdown_table(rows)}{tail}\n"
    )


@flow(name="data_quality")
def data_quality(db_path: str | None = None) -> Report:
    """Check the cache (read-only) and publish the findings; returns the typed report."""
    db = resolve_db_path(db_path)
    with TradingCacheManager(db, create=False, read_only=True) as cache:
        report = diagnose(cache, command=f"cache-manager {location_option(db)}")
    publish_markdown("data-quality-report", data_quality_markdown(db, report), "data_quality findings")
    counts = report.counts
    log = get_run_logger()
    (log.error if counts["error"] else log.info)(
        "data quality of %s: %d error(s), %d warning(s)", display_db(db), counts["error"], counts["warning"]
    )
    return report
