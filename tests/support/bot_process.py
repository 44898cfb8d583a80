"""`lastresort run` as a real process, for tests and benchmarks that need what a PaaS runs."""

from __future__ import annotations

import asyncio
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
    # The copy lives elsewhere: the files the shipped configuration names are given by absolute path.
    data["system_prompt_file"] = str(REPO / "config" / "system_prompt.md")
    data["risk_guard"] = {**data.get("risk_guard", {}), "phrases_file": str(REPO / "config" / "risk_phrases.yaml")}
    data["risk_review"] = {**data.get("risk_review", {}), "instructions_file": str(REPO / "config" / "risk_review.md")}
    path = tmp_path / f"lastresort-{len(list(tmp_path.glob('lastresort-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class BotProcess:
    """One `lastresort run`; output goes to a file so a chatty process can never block on a full pipe."""

    def __init__(self, env: dict[str, str], *, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(log_path.parent),
            "PORT": str(self.port),
            **env,
        }
        self.log_path = log_path
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli", "run", *self.args, cwd=REPO, env=self.env, stdout=log, stderr=log
            )
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
