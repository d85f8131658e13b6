"""The one table of deployments: which flow runs when, with which parameters.

Both ways of scheduling the flows come from :data:`DEPLOYMENTS`:

* ``.venv/bin/python deployments/serve.py`` serves them all from one process (``prefect.serve``);
* ``deployments/prefect.yaml`` (for ``prefect deploy --all`` and a process worker) is generated
  from it by :func:`render_prefect_yaml` (``.venv/bin/python deployments/serve.py --write-prefect-yaml``);
  a test fails when the file is out of date.

Every schedule is cron in ``America/New_York`` (so 17:00 stays 17:00 across DST), and knows
nothing of market holidays: the flows check the trading calendar themselves and skip.

Heartbeats: deployment runs keep Prefect's flow-run heartbeat (``flows.heartbeat_frequency``,
default 180 s). Nobody watches a scheduled run at 17:00; if its process dies (OOM, a reboot),
the run would stay *Running* forever, and with ``CANCEL_NEW`` that zombie's concurrency slot
would cancel every later fire. Missing heartbeats are what an automation can mark *Crashed*
(Prefect's "detect zombie flows" guide; self-hosted servers create that automation once).
The price is ~1.1 s at the end of each run (Prefect 3.8.8 joins the heartbeat thread, which
sleeps in 1-second steps), small next to a scheduled run's network work. Runs started from a
shell (``make run``, the benchmarks) are watched by whoever started them and turn it off:
``flows._common.without_heartbeat``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows._common import DEFAULT_SYMBOLS

__all__ = [
    "DeploymentSpec",
    "DEPLOYMENTS",
    "TIMEZONE",
    "WORK_POOL",
    "SCHEDULED_CONCURRENCY",
    "MANUAL_CONCURRENCY",
    "PREFECT_YAML",
    "REPO_ROOT",
    "render_prefect_yaml",
    "build_runner_deployments",
]

TIMEZONE = "America/New_York"
WORK_POOL = "cachelib-local"
#: Scheduled deployments: one run at a time; a run due while the previous one is still going
#: is cancelled rather than queued (the next fire catches up: every flow is gap-aware).
SCHEDULED_CONCURRENCY = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
#: Manual-only deployments (backfills): one run at a time, and a second run *waits* for the
#: first (Prefect's "AwaitingConcurrencySlot"). Nothing would catch up on a cancelled backfill:
#: the person who asked for it would find it "Cancelled" and the range never replayed.
MANUAL_CONCURRENCY = {"limit": 1, "collision_strategy": "ENQUEUE"}
REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: ``entrypoint`` is ``path/to/file.py:flow_function`` from the repo root."""

    name: str
    entrypoint: str
    cron: str | None
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ("cachelib",)

    @property
    def flow_name(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]

    @property
    def module(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0].removesuffix(".py").replace("/", ".")

    @property
    def full_name(self) -> str:
        """``flow/deployment``, as ``prefect deployment run`` wants it."""
        return f"{self.flow_name}/{self.name}"

    @property
    def concurrency(self) -> dict[str, Any]:
        """The concurrency limit: runs of a schedule cancel, manual runs queue."""
        return dict(SCHEDULED_CONCURRENCY if self.cron else MANUAL_CONCURRENCY)

    def load_flow(self) -> Any:
        """The flow object (imports its module)."""
        return getattr(importlib.import_module(self.module), self.flow_name)


DEPLOYMENTS: list[DeploymentSpec] = [
    DeploymentSpec(
        "intraday-bars", "flows/ingest_bars.py:ingest_bars", "*/15 9-16 * * 1-5",
        "1-minute bars of today's session every 15 minutes; skips outside market hours "
        "(the 09:00/09:15 fires before the open, and from 16:30) and on holidays.",
        {"symbols": DEFAULT_SYMBOLS, "timeframe": "1Min"}, ("cachelib", "ingest"),
    ),
    DeploymentSpec(
        "option-chains", "flows/ingest_options.py:ingest_option_chains", "15 16 * * 1-5",
        "One option-chain snapshot per underlying after the close; skips on holidays.",
        {"underlyings": DEFAULT_SYMBOLS}, ("cachelib", "ingest"),
    ),
    DeploymentSpec(
        "eod-bars", "flows/ingest_bars.py:ingest_bars", "30 16 * * 1-5",
        "Daily bars of the session that just closed; skips on holidays.",
        {"symbols": DEFAULT_SYMBOLS, "timeframe": "1Day"}, ("cachelib", "ingest"),
    ),
    DeploymentSpec(
        "daily-pipeline", "flows/daily_pipeline.py:daily_pipeline", "0 17 * * 1-5",
        "End of day: bars, option chains, replay, report (symbols from CACHELIB_SYMBOLS or the default).",
        {}, ("cachelib", "pipeline"),
    ),
    DeploymentSpec(
        "nightly-cleanup", "flows/maintenance.py:cache_maintenance", "0 2 * * *",
        "Delete expired rows every night.",
        {"vacuum": False}, ("cachelib", "maintenance"),
    ),
    DeploymentSpec(
        "weekly-vacuum", "flows/maintenance.py:cache_maintenance", "0 3 * * 0",
        "Delete expired rows and VACUUM the file, Sundays when nothing else runs.",
        {"vacuum": True}, ("cachelib", "maintenance"),
    ),
    DeploymentSpec(
        "weekly-data-quality", "flows/data_quality.py:data_quality", "0 6 * * 6",
        "Check the cache (missing sessions, expired rows, bad bars, outliers, chains without greeks, "
        "integrity) Saturdays at 06:00, after the week's ingests and before Sunday's vacuum; publishes "
        "the findings with their repair commands.",
        {}, ("cachelib", "maintenance"),
    ),
    DeploymentSpec(
        "replay-backfill", "flows/replay.py:replay_days", None,
        "Manual backfills: replay a range (missing minute bars are ingested first). Run with "
        "-p symbols='[\"AAPL\"]' -p start=2024-01-02 -p end=2024-03-28.",
        {"symbols": DEFAULT_SYMBOLS, "source": "auto"}, ("cachelib", "replay"),
    ),
]


def _yaml_document() -> dict[str, Any]:
    deployments = []
    for spec in DEPLOYMENTS:
        schedules = [] if spec.cron is None else [{"cron": spec.cron, "timezone": TIMEZONE, "active": True}]
        deployments.append({
            "name": spec.name,
            "description": spec.description,
            "entrypoint": spec.entrypoint,
            "tags": list(spec.tags),
            "parameters": {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in spec.parameters.items()},
            "schedules": schedules,
            "concurrency_limit": spec.concurrency,
            "work_pool": {"name": WORK_POOL, "work_queue_name": None, "job_variables": {}},
        })
    return {
        "name": "cachelib",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        # A process worker starts each run in a temporary directory: move to the repository
        # first. `prefect deploy` resolves {{ $PWD }} when it runs, so deploy from the root.
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}],
        "deployments": deployments,
    }


_HEADER = """\
# Prefect deployments of the cachelib flows.
# GENERATED from the table in deployments/__init__.py - do not edit by hand; regenerate with
#     .venv/bin/python deployments/serve.py --write-prefect-yaml
# Deploy from the repository root:
#     .venv/bin/prefect work-pool create cachelib-local --type process
#     .venv/bin/prefect deploy --all --prefect-file deployments/prefect.yaml
#     .venv/bin/prefect worker start --pool cachelib-local
# The pull step moves each run into the repository: `prefect deploy` replaces {{ $PWD }} with the
# directory it is run from. Schedules are America/New_York cron and know nothing of holidays -
# the flows check the trading calendar themselves and skip. One run per deployment at a time:
# a scheduled run due while the previous one runs is cancelled (CANCEL_NEW: the next fire
# catches up); a manual run (replay-backfill) waits for the previous one (ENQUEUE).
# Runs keep Prefect's heartbeat (default 180 s): it lets an automation mark a run whose process
# died Crashed, rather than leave it holding its concurrency slot; `make run` turns it off.
"""


def render_prefect_yaml() -> str:
    """The text of ``deployments/prefect.yaml`` for :data:`DEPLOYMENTS`."""
    import yaml  # PyYAML comes with prefect

    body = yaml.safe_dump(_yaml_document(), sort_keys=False, default_flow_style=False, width=100)
    return _HEADER + body


def build_runner_deployments(specs: list[DeploymentSpec] | None = None) -> list[Any]:
    """``flow.to_deployment(...)`` for every spec, for ``prefect.serve`` or ``.apply()``."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    out = []
    for spec in specs if specs is not None else DEPLOYMENTS:
        limit = ConcurrencyLimitConfig(
            limit=spec.concurrency["limit"],
            collision_strategy=ConcurrencyLimitStrategy(spec.concurrency["collision_strategy"]),
        )
        deployment = spec.load_flow().to_deployment(
            name=spec.name,
            schedule=Cron(spec.cron, timezone=TIMEZONE) if spec.cron else None,
            parameters=dict(spec.parameters),
            concurrency_limit=limit,
            description=spec.description,
            tags=list(spec.tags),
        )
        deployment.entrypoint = spec.entrypoint  # same as prefect.yaml, relative to the repo root
        out.append(deployment)
    return out
