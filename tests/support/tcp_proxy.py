"""A TCP proxy a test can cut and restore: a database outage without stopping the database server.

The bot connects to the proxy's port; the proxy forwards bytes to the real server. `cut()` drops every open
connection and refuses new ones (what a crashed server or a failed network path looks like to a client);
`cut(hang=True)` instead accepts connections and forwards nothing (a black-holed path, where only the
client's own timeouts help). `restore()` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._cut = False
        self._hang = False
        self.accepted = 0
        self.refused = 0

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for pipe in list(self._pipes):
            pipe.cancel()
        for pipe in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipe
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self, *, hang: bool = False) -> None:
        """Drop every connection now; until `restore()`, refuse new ones (or, with `hang`, hold them mute)."""
        self._cut, self._hang = True, hang
        self._drop_all()

    def restore(self) -> None:
        self._cut = self._hang = False
        for writer in list(self._held):
            _close(writer)
        self._held.clear()

    def _drop_all(self) -> None:
        for writer in list(self._open):
            _close(writer)
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            if self._hang:
                self._held.add(writer)
            else:
                _close(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _close(writer)
            return
        self.accepted += 1
        self._open.update((writer, upstream_writer))
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, (writer, upstream_writer)))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in pair:
                self._open.discard(end)
                _close(end)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        transport = writer.transport
        # abort(), not close(): a reset, as when a server dies, rather than an orderly goodbye.
        transport.abort()
