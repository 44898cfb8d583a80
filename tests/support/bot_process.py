"""`lastresort run` as a real process, for tests and benchmarks that need what a PaaS runs."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import yaml

from tests.support.cli_zygote import Child, shared
from tests.support.paths import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_with(tmp_path: Path, **sections: dict[str, object]) -> Path:
    """A copy of the shipped configuration with some sections overridden (e.g. faster recovery)."""
    shipped = REPO / "config" / "lastresort.yaml"
    data = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    # Files the shipped config names are relative to it: point at them where they are.
    for holder in [data, *(v for v in data.values() if isinstance(v, dict))]:
        for key, value in list(holder.items()):
            if key.endswith("_file") and isinstance(value, str):
                holder[key] = str(shipped.parent / value)
    path = tmp_path / f"lastresort-{len(list(tmp_path.glob('lastresort-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class BotProcess:
    """One `lastresort run`; output goes to a file so a chatty process can never block on a full pipe.

    The process is forked from this worker's zygote (tests/support/cli_zygote.py), which has the imports done;
    `fresh=True` starts a new interpreter instead, as the benchmark does to measure what a PaaS runs.
    """

    def __init__(self, env: dict[str, str], *, log_path: Path, args: tuple[str, ...] = (), fresh: bool = False) -> None:
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(log_path.parent),
            "PORT": str(self.port),
            **env,
        }
        self.log_path = log_path
        self.args = args
        self.fresh = fresh
        self.process: asyncio.subprocess.Process | Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = ["run", *self.args]
        if self.fresh:
            with self.log_path.open("ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bots.cli", *argv, cwd=REPO, env=self.env, stdout=log, stderr=log
                )
        else:
            spawn = functools.partial(shared().spawn, env=self.env, stdout=self.log_path, append=True)
            self.process = await asyncio.to_thread(spawn, argv)
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"lastresort run exited early ({self.process.returncode}):\n{self.output()}")
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"lastresort run did not become healthy:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
