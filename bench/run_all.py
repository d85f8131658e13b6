"""Run every benchmark in ``bench/``: each ``bench/bench_*.py`` module's ``main()``, in name order.

Run with ``python -m bench.run_all`` (optionally naming some: ``python -m bench.run_all store replay``).
Each module is imported only when its turn comes, so a broken or slow import affects that
benchmark alone; a failure is printed with its traceback and the next benchmark runs. The exit
status is 1 when any benchmark failed.

A ``main`` that takes an argument (``main(argv=None)`` with argparse) gets ``[]``, so it never
parses this runner's own command line and runs with its defaults.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def discover(names: list[str] | None = None) -> list[str]:
    """Module names ``bench.bench_*`` found next to this file, optionally filtered by suffix."""
    stems = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if names:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in names}
        unknown = wanted - set(stems)
        if unknown:
            raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))} (have: {', '.join(stems)})")
        stems = [s for s in stems if s in wanted]
    return [f"{__package__ or 'bench'}.{stem}" for stem in stems]


def _call_main(module: Any) -> Any:
    main = getattr(module, "main", None)
    if not callable(main):
        raise TypeError(f"{module.__name__} has no main() to call")
    params = [
        p for p in inspect.signature(main).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return main([]) if params else main()


def run_all(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the benchmarks; returns ``{module: {"ok", "seconds", "result" | "error"}}``."""
    outcomes: dict[str, dict[str, Any]] = {}
    for name in discover(names):
        print(f"\n=== {name} " + "=" * max(0, 70 - len(name)), flush=True)
        t0 = time.perf_counter()
        try:
            result = _call_main(importlib.import_module(name))
        except KeyboardInterrupt:
            raise
        except SystemExit as exc:
            ok = exc.code in (None, 0)
            if not ok:
                traceback.print_exc()
            outcomes[name] = {"ok": ok, "seconds": time.perf_counter() - t0, "result": exc.code}
            if not ok:
                outcomes[name]["error"] = f"exited with status {exc.code!r}"
        except BaseException as exc:  # noqa: BLE001 - report any failure and go on to the next benchmark
            traceback.print_exc()
            outcomes[name] = {"ok": False, "seconds": time.perf_counter() - t0, "error": repr(exc)}
        else:
            # A main() that returns an int is an exit status (0 = success).
            ok = not (isinstance(result, int) and not isinstance(result, bool) and result != 0)
            outcomes[name] = {"ok": ok, "seconds": time.perf_counter() - t0, "result": result}
            if not ok:
                outcomes[name]["error"] = f"main() returned exit status {result}"
        sys.stdout.flush()
    print("\n=== summary " + "=" * 59)
    for name, outcome in outcomes.items():
        status = "ok" if outcome["ok"] else f"FAILED: {outcome['error']}"
        print(f"{name:<28} {outcome['seconds']:7.1f} s  {status}")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    outcomes = run_all(names or None)
    return 0 if all(o["ok"] for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
