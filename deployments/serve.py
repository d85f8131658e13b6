"""Serve every cachelib deployment from this one process: ``.venv/bin/python deployments/serve.py``.

The schedules, parameters and concurrency limits come from the table in
``deployments/__init__.py`` (the same one ``deployments/prefect.yaml`` is generated from).
Needs a Prefect API: ``prefect server start`` in another terminal (or ``PREFECT_API_URL``).
Runs execute as subprocesses of this one, in the repository root.

``--write-prefect-yaml`` regenerates ``deployments/prefect.yaml`` from the table and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `flows`, `tasks`, `deployments` importable
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-prefect-yaml", action="store_true",
                        help="regenerate deployments/prefect.yaml from the table and exit")
    args = parser.parse_args(argv)

    from deployments import PREFECT_YAML, build_runner_deployments, render_prefect_yaml

    if args.write_prefect_yaml:
        PREFECT_YAML.write_text(render_prefect_yaml())
        print(f"wrote {PREFECT_YAML}")
        return 0

    from prefect import serve

    os.chdir(ROOT)  # entrypoints are relative to the repository root
    serve(*build_runner_deployments())
    return 0


if __name__ == "__main__":
    sys.exit(main())
