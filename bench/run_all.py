"""Run every benchmark in bench/ one after the other and print their tables (what `make bench` does).

    .venv/bin/python bench/run_all.py            # full sizes (about 25 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # every script at its smoke-test size
    .venv/bin/python bench/run_all.py --only agent_cost

Each script runs in its own process with this interpreter; one that fails is reported and the
others still run (exit status 1 if any failed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In this order; any other bench/*.py script with a main (not starting with "_") runs after these.
ORDER = ("agent_cost", "collector_ingest", "drain_backlog")


def scripts() -> list[str]:
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all"}
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="run each script at its smoke-test size")
    parser.add_argument("--only", default="", help="comma-separated script names (default: all)")
    args = parser.parse_args(argv)
    names = scripts()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; have {names}")
        names = wanted
    failed: list[str] = []
    for name in names:
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n## bench/{name}.py{' --quick' if args.quick else ''}\n", flush=True)
        started = time.monotonic()
        code = subprocess.run(command, check=False).returncode
        print(f"\n(bench/{name}.py: exit {code} after {time.monotonic() - started:.0f}s)", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
