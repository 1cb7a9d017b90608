"""The test project served by uvicorn in a subprocess, and a small SSE client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

import httpx

from scripts.pgtemp import free_port
from tests.helpers import ROOT, wait_until


class Uvicorn:
    """``uvicorn tests.asgi:application`` on a free loopback port, against ``url``."""

    def __init__(self, url: str, app: str = "tests.asgi:application", cwd: str = str(ROOT)) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", app, "--port", str(self.port)),
                *("--host", "127.0.0.1", "--lifespan", "off", "--log-level", "warning"),
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()
        wait_until(self._up, 30, "uvicorn to answer")

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        with stream:
            self.lines.extend(stream)

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{self.output()}")
        try:
            return httpx.get(self.base + "/hub/", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)


@dataclass
class Message:
    """One SSE message: a comment (``event`` is None) or an event."""

    event: str | None
    data: str


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Parse an event stream as EventSource does (comments too, for the keepalive)."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if event is not None or data:
                yield Message(event or "message", "\n".join(data))
            event, data = None, []
        elif line.startswith(":"):
            yield Message(None, line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
