"""`lastresort` commands as real child processes, forked from a process that has already imported them.

A fresh `python -m bots.cli` spends about 1.5 s of CPU before it does anything: importing the anthropic SDK
(~0.9 s of pydantic models) and compiling the phrase list (~0.25 s). The suite starts about a hundred of them,
and on two cores that start-up was most of its CPU. This is the zygote pattern (multiprocessing's forkserver,
Android's zygote): one server per test worker imports what every command imports, compiles the shipped phrase
list once (`re` keeps compiled patterns in its cache, and a fork inherits it), and forks a child per command.

Each child is a separate process with its own pid, environment, working directory, stdin, stdout, stderr,
signals and exit status, and runs the same `bots.cli.main` that `python -m bots.cli` runs. What a fork cannot
give it: a hash seed of its own (the children of one worker iterate sets of strings in the same order). Only
what needs a terminal (the tests on a pty) and the benchmark still start a fresh interpreter.

Protocol, one JSON line each way. The test side writes {id, argv, env, cwd, stdin, stdout, stderr, append}
(stdin, stdout and stderr are file paths; stderr may be "stdout"). The server answers {id, pid} once the child
runs and {id, returncode} when it exits. Several children may run at once (two instances of the bot, say).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

# --------------------------------------------------------------------------------------------------------------
# The server (`python -m tests.support.cli_zygote`)
# --------------------------------------------------------------------------------------------------------------


def _preload() -> None:
    """Import what every command imports, and compile the shipped phrase list into `re`'s cache."""
    import bots.cli
    import bots.runtime
    import bots.slack.bot
    import bots.terminal.chat
    from core.risk_guard import compile_lexicon
    from core.settings import Settings

    compile_lexicon(Settings().risk_guard.lexicon)
    del bots


def _child(request: dict[str, Any], inherited: list[int]) -> None:
    """In the forked child: become the command, then exit with its status. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        written = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if request["append"] else os.O_TRUNC)
        stdin = os.open(request["stdin"] or os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], written, 0o600)
        stderr = stdout if request["stderr"] == "stdout" else os.open(request["stderr"], written, 0o600)
        for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
        for fd in {stdin, stdout, stderr}:
            os.close(fd)
        # New text streams over the new descriptors (the server's own buffers must not leak into the command),
        # with the encodings a fresh interpreter gets in a UTF-8 locale.
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
            2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
        )
        sys.argv = [str(REPO / "bots" / "cli.py"), *request["argv"]]
        from bots.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            # As the interpreter does: die of the signal, so the parent sees what a fresh process shows.
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What the interpreter does on the way out: wait for threads that are not daemons (a store left open
        # hangs a real process here, so it must hang this one too), exit handlers (logging flushes its
        # handlers), then the streams.
        with contextlib.suppress(BaseException):
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def serve() -> None:
    """The server loop, single-threaded (a fork copies only the calling thread): requests on stdin, children
    reaped on SIGCHLD, answers on stdout."""
    _preload()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, str] = {}  # pid -> request id

    def answer(message: dict[str, Any]) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    answer({"ready": True})
    pending = b""
    open_input = True
    while open_input or running:
        for key, _ in selector.select():
            if key.fd == wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                # The test worker is gone: nothing it started may outlive it.
                open_input = False
                selector.unregister(0)
                for pid in running:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                continue
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, [wake_read, wake_write, selector.fileno()])
                running[pid] = request["id"]
                answer({"id": request["id"], "pid": pid})
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in running:
                answer({"id": running.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})


# --------------------------------------------------------------------------------------------------------------
# The test side
# --------------------------------------------------------------------------------------------------------------


class Child:
    """A command the zygote runs, with the parts of `subprocess.Popen` / `asyncio.subprocess.Process` tests use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []

    def _exit(self, returncode: int) -> None:
        """From the zygote's reader thread."""
        with self._lock:
            self.returncode = returncode
            self._exited.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_resolve, future, returncode)

    def send_signal(self, signum: int) -> None:
        # Only while it runs: once reaped, its pid may belong to someone else.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait_sync(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        assert self.returncode is not None
        return self.returncode

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            self._waiters.append((loop, future))
        return await future


def _resolve(future: asyncio.Future[int], returncode: int) -> None:
    if not future.done():
        future.set_result(returncode)


class _Launch:
    """A request on its way: the reader thread fills in the child once the zygote has forked it."""

    def __init__(self) -> None:
        self.forked = threading.Event()
        self.child: Child | None = None


class Zygote:
    """Starts the server on first use; runs commands through it."""

    def __init__(self) -> None:
        self._server: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._launches: dict[str, _Launch] = {}
        self._children: dict[str, Child] = {}
        self._files = Path(tempfile.mkdtemp(prefix="lastresort-zygote-"))

    def _ensure_server(self) -> subprocess.Popen[bytes]:
        if self._server is None:
            self._server = subprocess.Popen(
                [sys.executable, "-m", "tests.support.cli_zygote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
                # What a command needs from outside comes with each request; the server itself runs bare.
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(self._files)},
            )
            assert self._server.stdout is not None
            if json.loads(self._server.stdout.readline() or b"null") != {"ready": True}:
                raise RuntimeError(f"the zygote did not start (status {self._server.wait()})")
            threading.Thread(target=self._read_answers, args=(self._server,), name="zygote", daemon=True).start()
        return self._server

    def _read_answers(self, server: subprocess.Popen[bytes]) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            message = json.loads(line)
            with self._lock:
                if "pid" in message:
                    launch = self._launches.pop(message["id"])
                    launch.child = self._children[message["id"]] = Child(message["pid"])
                    launch.forked.set()
                else:
                    self._children.pop(message["id"])._exit(message["returncode"])
        # The server is gone (it only exits when told to, so it crashed): nothing waits in vain for a fork or
        # for an exit it can no longer report (the status of a child it lost is unknown: -1).
        with self._lock:
            for launch in self._launches.values():
                launch.forked.set()
            lost, self._children = list(self._children.values()), {}
        for child in lost:
            child._exit(-1)

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path = REPO,
        stdin: Path | None = None,
        stdout: Path,
        stderr: Path | None = None,
        append: bool = False,
    ) -> Child:
        """Start `python -m bots.cli ARGV`; stderr None means into stdout's file."""
        with self._lock:
            server = self._ensure_server()
            request_id = str(next(self._ids))
            launch = self._launches[request_id] = _Launch()
            request = {"id": request_id, "argv": argv, "env": env, "cwd": str(cwd), "append": append}
            request |= {"stdin": str(stdin) if stdin else None, "stdout": str(stdout)}
            request["stderr"] = str(stderr) if stderr else "stdout"
            assert server.stdin is not None
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
        if not launch.forked.wait(30) or launch.child is None:
            raise RuntimeError("the zygote did not fork")
        return launch.child

    def run(
        self, argv: list[str], *, input: str, env: dict[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Like `subprocess.run(capture_output=True, text=True)`."""
        files = Path(tempfile.mkdtemp(dir=self._files))
        stdin, stdout, stderr = files / "stdin", files / "stdout", files / "stderr"
        stdin.write_text(input, encoding="utf-8")
        child = self.spawn(argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
        try:
            returncode = child.wait_sync(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait_sync(10)
            raise subprocess.TimeoutExpired(argv, timeout, _text(stdout), _text(stderr)) from None
        try:
            return subprocess.CompletedProcess(argv, returncode, _text(stdout), _text(stderr))
        finally:
            shutil.rmtree(files, ignore_errors=True)

    def close(self) -> None:
        if self._server is not None and self._server.poll() is None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
        shutil.rmtree(self._files, ignore_errors=True)


def _text(path: Path) -> str:
    # Universal newlines, as subprocess.run(text=True) reads them.
    with path.open(encoding="utf-8", errors="replace") as file:
        return file.read()


@functools.cache
def shared() -> Zygote:
    """This test worker's zygote, started on first use and stopped when the worker exits."""
    zygote = Zygote()
    atexit.register(zygote.close)
    return zygote


def run_cli(
    *args: str, input: str = "", env: dict[str, str], cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m bots.cli ARGS` with `input` on stdin and its output captured, like `subprocess.run`."""
    return shared().run(list(args), input=input, env=env, cwd=cwd, timeout=timeout)


if __name__ == "__main__":
    serve()
