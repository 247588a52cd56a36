"""The long run of the crash schedules (10,000+), or one schedule replayed.

    .venv/bin/python -m tests.reliability.long_run --seed 7 --count 10000
    .venv/bin/python -m tests.reliability.long_run --case program-1164 --seed 1164 --count 1
    .venv/bin/python -m tests.reliability.long_run --aws --seed 20000 --count 1000

Schedule ``i`` of a run uses seed ``SEED + i`` and cycles through the
example cases and generated programs (``--case`` fixes one); ``--driver``
picks the step driver (default, fast), the real Runtime (``runtime``:
cases whose results do not depend on attempt numbers or the clock) or the
AWS loop on DynamoDB (``aws``, also ``--aws``: moto, about half a second a
schedule; see :mod:`tests.reliability.aws_driver`). Prints every failure
with the command replaying it, then a summary; exits 1 if any schedule failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
from collections import Counter

from tests.reliability.aws_driver import Key, check_schedule, moto_tables
from tests.reliability.harness import (
    EXAMPLE_CASES,
    Case,
    Outcome,
    case_named,
    check_outcome,
    drive,
    drive_runtime,
    program_case,
    reproduce_hint,
)


def pick(index: int, seed: int, driver: str) -> Case:
    examples = [
        c
        for c in EXAMPLE_CASES
        if driver != "runtime" or all(w != "waiting" for _, _, w in c.events)
    ]
    if index % 3 == 0:
        return examples[(index // 3) % len(examples)]
    return program_case(seed, steady=driver == "runtime", local=driver == "aws")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the first schedule")
    parser.add_argument("--count", type=int, default=10_000, help="number of schedules")
    parser.add_argument("--case", help="one case (an example name or program-SEED)")
    parser.add_argument("--driver", choices=["step", "runtime", "aws"], default="step")
    parser.add_argument("--aws", action="store_true", help="the same as --driver aws")
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="both")
    args = parser.parse_args(argv)
    if args.aws:
        args.driver = "aws"

    logging.disable(logging.CRITICAL)
    kills: Counter[str] = Counter()
    failures: list[str] = []
    duplicated = 0
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tables = stack.enter_context(moto_tables()) if args.driver == "aws" else None
        clean_runs: dict[tuple[str, frozenset[Key], frozenset[Key]], Outcome] = {}
        for i in range(args.count):
            seed = args.seed + i
            case = case_named(args.case) if args.case else pick(i, seed, args.driver)
            store = args.store if args.store != "both" else ("sqlite" if seed % 2 else "memory")
            chaotic: Outcome
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    if tables is not None:
                        chaotic = check_schedule(case, seed, tables, clean_runs)
                    else:
                        run = drive if args.driver == "step" else drive_runtime
                        clean = run(case, None, store)
                        chaotic = run(case, seed, store)
                        check_outcome(clean, chaotic, same_history=args.driver == "step")
            except AssertionError as exc:
                failures.append(f"{reproduce_hint(case.name, seed, args.driver)}: {exc}")
                print(f"FAILED {failures[-1]}", flush=True)
                continue
            kills.update(chaotic.kills)
            duplicated += chaotic.duplicated
            if (i + 1) % (100 if tables is not None else 1000) == 0:
                print(f"... {i + 1} schedules, {len(failures)} failed", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    print(
        f"{args.count} crash schedules ({args.driver} driver, seeds {args.seed}.."
        f"{args.seed + args.count - 1}) in {elapsed:.1f}s: {len(failures)} failed; "
        f"{sum(kills.values())} kills ({dict(sorted(kills.items()))}), "
        f"{duplicated} duplicate deliveries"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
