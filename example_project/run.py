"""Start the example: migrate, create the demo user, run listen_events and uvicorn.

Needs DATABASE_URL (``make example`` provides a throwaway PostgreSQL).
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANAGE = [sys.executable, str(HERE / "manage.py")]


def main() -> int:
    address = os.environ.get("EXAMPLE_ADDRESS", "127.0.0.1:8000")
    subprocess.run([*MANAGE, "migrate", "--no-input", "-v", "0"], check=True)
    subprocess.run([*MANAGE, "demo_user"], check=True)
    children = [
        subprocess.Popen([*MANAGE, "listen_events"]),
        subprocess.Popen(uvicorn(address)),
    ]
    print(f"\nOpen http://{address}/ and place an order. Ctrl-C stops everything.\n", flush=True)
    try:
        # Either child exiting on its own is a failure: stop the other too.
        os.wait()
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(children)


def uvicorn(address: str) -> list[str]:
    """An ASGI server: the page's event stream is an async view."""
    host, _, port = address.rpartition(":")
    return [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application", "--app-dir", str(HERE)),
        # Ctrl-C ends the open event streams: uvicorn's graceful shutdown
        # need not wait for the browsers to leave.
        *("--host", host, "--port", port, "--lifespan", "off"),
    ]


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop the children: a terminal's Ctrl-C reached them already; SIGTERM the rest."""
    for grace, action in ((3, None), (10, signal.SIGTERM), (None, signal.SIGKILL)):
        for child in children:
            if action is not None and child.poll() is None:
                child.send_signal(action)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)


if __name__ == "__main__":
    sys.exit(main())
