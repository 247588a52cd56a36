"""``python -m tests.perf``: every benchmark, one table (see run_all.py)."""

from tests.perf.run_all import run

raise SystemExit(run())
