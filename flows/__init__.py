"""Prefect flows composing the tasks of :mod:`tasks` (see ``docs_flows.md``).

=================================================  ==========================================
``from flows.ingest_bars import ingest_bars``       bars of any timeframe, gap-aware, chunked
``from flows.ingest_options import ingest_option_chains``  one chain snapshot per underlying
``from flows.maintenance import cache_maintenance``  expire rows, optional VACUUM
``from flows.replay import replay_days``             replay sessions, fan-out per session
``from flows.daily_pipeline import daily_pipeline``  the end-of-day runbook
=================================================  ==========================================

Nothing is imported here: a module named like its flow (``flows.daily_pipeline``) would shadow
a package-level export of the same name.
"""
