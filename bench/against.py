"""Durable throughput of this tree against another commit's, in alternation.

Usage: ``python -m bench.against REF [--rounds N] [--runs K]``

REF is checked out in a temporary git worktree. Then, K times, each side (REF,
then this tree) runs its own one-listener durable benchmark (20,000 events)
N times, on a fresh throwaway PostgreSQL started by its own
``scripts/pgtemp.py``, with this interpreter (so with this virtualenv's
driver). Prints every rate, each side's median and the ratio: how this tree
compares with an earlier design on the same machine, in the same minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run with a tree's root first on sys.path: that tree's library and bench.
# Before bench/durable.py existed, the benchmark lived in bench/__main__.py.
CHILD = """
import os, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
import bench.__main__ as main
rounds = int(sys.argv[1])
if hasattr(main, "durable_throughput"):
    rates = [main.durable_throughput(1, main.Sizes()) for _ in range(rounds)]
else:
    from bench import durable
    rates = [durable.throughput(1, 20_000, main.Listener) for _ in range(rounds)]
print("RATES", *rates)
"""


def rates(tree: Path, rounds: int) -> list[float]:
    """One-listener durable events/s of ``tree``, ``rounds`` times on one server."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "PYTHONPATH": str(tree)}
    env.pop("DATABASE_URL", None)  # each run gets a fresh server
    result = subprocess.run(
        [
            *(sys.executable, str(tree / "scripts" / "pgtemp.py")),
            *(sys.executable, "-c", CHILD, str(rounds)),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RATES ")]
    if result.returncode or not lines:
        raise RuntimeError(f"{tree}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return [float(rate) for rate in lines[-1].split()[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="rates per run (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="alternations (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgpubsub-against-") as folder:
        other = Path(folder) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "--detach", str(other), args.ref],
            cwd=ROOT,
            check=True,
        )
        try:
            theirs: list[float] = []
            ours: list[float] = []
            for _ in range(args.runs):
                theirs += rates(other, args.rounds)
                ours += rates(ROOT, args.rounds)
                latest = [
                    f"{rate:,.0f}" for rate in (*theirs[-args.rounds :], *ours[-args.rounds :])
                ]
                print(f"{args.ref}: {latest[: args.rounds]}  this tree: {latest[args.rounds :]}")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=True
            )
    before, now = statistics.median(theirs), statistics.median(ours)
    print(f"durable, 1 listener (events/s): {args.ref} {before:,.0f}, this tree {now:,.0f}")
    print(f"ratio {now / before:.2f}")


if __name__ == "__main__":
    main()
