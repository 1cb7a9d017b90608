"""Durable throughput of this tree against another commit's, in alternation.

Usage: ``python -m bench.against REF [--case CASE]... [--events N] [--rounds N] [--runs K]``

REF is checked out in a temporary git worktree. Then, K times, for each case,
each side (REF, then this tree) runs one ``listen_events`` N times on a fresh
throwaway PostgreSQL (this tree's ``scripts/pgtemp.py``, whatever REF's can
start), with this interpreter (so with this virtualenv's driver and Django).
Each round stores the case's events in one transaction and times until the
outbox is empty. Both sides run the same handlers (``bench/against_side``,
on ``PYTHONPATH`` after the measured tree) through their own library, so a
tree without a writing handler, or without the table it writes, compares
too. Prints every rate, and per case each side's median and the ratio: how
this tree compares with an earlier design on the same machine, in the same
minutes.

Cases (default: the first three):

* ``trivial-fsync-off``: a handler that writes nothing, on the tests' fast
  server (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off),
  20,000 events a round;
* ``writes-fsync-on``: a handler that saves one row through the ORM, on a
  server with PostgreSQL's default durability (every commit waits for its
  WAL flush), 10,000 events a round;
* ``trivial-fsync-on``: the trivial handler on that server, 10,000 events;
* ``writes-fsync-off``: the writing handler on the fast server, 20,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scripts.pgtemp import TemporaryPostgres

ROOT = Path(__file__).resolve().parent.parent
SIDE = ROOT / "bench" / "against_side"


@dataclass(frozen=True)
class Case:
    handler: str  # "trivial" or "writes", as pgpubsub_against.pubsub.CHANNELS
    durable: bool  # the server keeps PostgreSQL's default durability
    events: int  # per round, unless --events says otherwise

    def title(self, events: int) -> str:
        what = "writes a row" if self.handler == "writes" else "trivial handler"
        return f"{what}, fsync {'on' if self.durable else 'off'}, {events:,} events"


CASES = {
    "trivial-fsync-off": Case("trivial", durable=False, events=20_000),
    "writes-fsync-on": Case("writes", durable=True, events=10_000),
    "trivial-fsync-on": Case("trivial", durable=True, events=10_000),
    "writes-fsync-off": Case("writes", durable=False, events=20_000),
}
DEFAULT_CASES = ("trivial-fsync-off", "writes-fsync-on", "trivial-fsync-on")


def rates(tree: Path, case: Case, events: int, rounds: int) -> list[float]:
    """One-listener durable events/s of ``tree``, ``rounds`` times on one fresh server."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pgpubsub_against.settings",
        "PYTHONPATH": os.pathsep.join((str(tree), str(SIDE))),
    }
    with TemporaryPostgres(durable=case.durable) as server:
        env["DATABASE_URL"] = server.url
        command = ["-m", "pgpubsub_against.child", case.handler, str(events), str(rounds)]
        result = subprocess.run(
            [sys.executable, *command],
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
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ref", help="the commit to compare with")
    parser.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help=f"repeatable (default: {', '.join(DEFAULT_CASES)})",
    )
    parser.add_argument(
        "--events", type=int, help="events per round, every case (default: the case's)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rates per run (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="alternations (default 3)")
    args = parser.parse_args()
    names: list[str] = list(dict.fromkeys(args.case or DEFAULT_CASES))
    sizes = {name: args.events or CASES[name].events for name in names}
    titles = {name: CASES[name].title(sizes[name]) for name in names}
    theirs: dict[str, list[float]] = {name: [] for name in names}
    ours: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="pgpubsub-against-") as folder:
        other = Path(folder) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "--detach", str(other), args.ref],
            cwd=ROOT,
            check=True,
        )
        try:
            for run in range(1, args.runs + 1):
                for name in names:
                    case, events = CASES[name], sizes[name]
                    before = rates(other, case, events, args.rounds)
                    now = rates(ROOT, case, events, args.rounds)
                    theirs[name] += before
                    ours[name] += now
                    shown = [", ".join(f"{rate:,.0f}" for rate in side) for side in (before, now)]
                    print(
                        f"run {run}, {titles[name]}: {args.ref} [{shown[0]}]"
                        f"  this tree [{shown[1]}]",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=True
            )
    print(f"durable, 1 listener, medians of {args.runs} x {args.rounds} rounds (events/s):")
    for name in names:
        old, new = statistics.median(theirs[name]), statistics.median(ours[name])
        print(f"{titles[name]}: {args.ref} {old:,.0f}, this tree {new:,.0f}, ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
