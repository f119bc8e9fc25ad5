"""`make bench` (python -m bench): scoring throughput, the dashboard at scale, memory; one table, then ratios.

    python -m bench [--repeats 5] [--concurrency 1,8,16,32] [--seconds 4]
                    [--only scoring|dashboard|test-scoring]

Results also go to $LYNX_VAR_DIR/bench/results.json. Numbers depend on the machine and on what else runs on
it: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import machine
from .report import Report


def _levels(text: str) -> list[int]:
    levels = sorted({int(part) for part in text.split(",") if part.strip()})
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers, e.g. 1,8,16,32")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeated runs per figure (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=_levels, default=[1, 8, 16, 32], help="client counts, default 1,8,16,32"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=4.0,
        help="about how long each throughput measurement runs (default 4)",
    )
    parser.add_argument(
        "--only",
        choices=("scoring", "dashboard", "test-scoring"),
        help="run one part (test-scoring: the dashboard part up to the test-scoring overhead, no data set)",
    )
    parser.add_argument(
        "--database-server",
        default=os.environ.get("LYNX_BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server for the dashboard part; a bench database is created there and dropped",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    var_dir = Path(os.environ.get("LYNX_VAR_DIR", Path(__file__).resolve().parent.parent / "var" / "bench"))
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["LYNX_VAR_DIR"] = str(var_dir)
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    report = Report()
    report.machine = machine.describe()
    print(machine.summary(report.machine), flush=True)
    print(
        f"command: python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(),
        flush=True,
    )

    if args.only in (None, "scoring"):
        from . import scoring_bench

        scoring_bench.run(
            report,
            var_dir=var_dir,
            repeats=args.repeats,
            levels=args.concurrency,
            seconds=args.seconds,
            log=log,
        )
    if args.only in (None, "dashboard", "test-scoring"):
        from . import dashboard_bench

        dashboard_bench.run(
            report,
            var_dir=var_dir,
            repeats=args.repeats,
            database_server=args.database_server,
            log=log,
            pages=args.only != "test-scoring",
        )

    report.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.machine["wall_seconds"] = round(time.monotonic() - started, 1)
    report.save(var_dir / "bench" / "results.json")
    print()
    print(report.table())
    print()
    for note in report.notes:
        print(f"note: {note}")
    print(
        f"load average at end: {' '.join(str(x) for x in report.machine['load_average_at_end'])}; "
        f"wall time {report.machine['wall_seconds']:.0f} s; results in {var_dir / 'bench' / 'results.json'}"
    )
    for line in report.ratio_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
