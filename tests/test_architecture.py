"""architecture.md practices 1 and 4: the core's import rule, and nothing happens at import time."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "core"
BOTS = REPO / "bots"

# Platform SDKs and HTTP servers: adapters' business, never the core's.
PLATFORM_LIBRARIES = frozenset({"slack_bolt", "slack_sdk", "discord", "aiohttp"})
# Drivers and SDKs the core may import only in the one module that implements the port.
ONLY_IN = {
    "anthropic": {"core/claude_client.py"},
    "aiosqlite": {"core/storage/sqlite_store.py"},
    "sqlite3": {"core/storage/sqlite_store.py"},
    "asyncpg": {"core/storage/postgres_store.py"},
}


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


CORE_FILES = sorted(CORE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module a file imports, anywhere in it (also inside functions and
    `if TYPE_CHECKING:`), including `importlib.import_module("x")` and `__import__("x")` with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                roots.add(first.value.split(".")[0])
    return roots


def test_the_core_has_modules_to_check() -> None:
    names = {relative(p) for p in CORE_FILES}
    assert {"core/rules.py", "core/claude_client.py", "core/storage/sqlite_store.py"} <= names


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import slack_sdk.web", {"slack_sdk"}, id="dotted-import"),
        pytest.param("from discord import ui", {"discord"}, id="from-import"),
        pytest.param("def f():\n    import aiohttp\n", {"aiohttp"}, id="import-inside-function"),
        pytest.param(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import anthropic\n",
            {"typing", "anthropic"},
            id="type-checking-import",
        ),
        pytest.param("import importlib\nimportlib.import_module('asyncpg')", {"importlib", "asyncpg"}, id="dynamic"),
        pytest.param("from . import rules\nfrom .storage import rows", set(), id="relative-imports-are-internal"),
    ],
)
def test_import_scanner_sees_every_kind_of_import(tmp_path: Path, source: str, expected: set[str]) -> None:
    # The rule below is only as good as this scanner.
    path = tmp_path / "sample.py"
    path.write_text(source, encoding="utf-8")
    assert imported_roots(path) == expected


def test_import_scanner_finds_the_allowed_imports() -> None:
    # The permitted modules really import their drivers: proof the scan is not vacuous on the real tree.
    assert "anthropic" in imported_roots(CORE / "claude_client.py")
    assert "aiosqlite" in imported_roots(CORE / "storage" / "sqlite_store.py")


@pytest.mark.parametrize("path", CORE_FILES, ids=relative)
def test_core_never_imports_a_platform_library(path: Path) -> None:
    assert imported_roots(path) & PLATFORM_LIBRARIES == set()


@pytest.mark.parametrize("path", CORE_FILES, ids=relative)
def test_core_imports_drivers_only_in_the_module_that_implements_the_port(path: Path) -> None:
    roots = imported_roots(path)
    misplaced = {name for name, allowed in ONLY_IN.items() if name in roots and relative(path) not in allowed}
    assert misplaced == set(), f"{relative(path)} imports {sorted(misplaced)}"


# --------------------------------------------------------------------------------------------------------------
# Nothing at import time
# --------------------------------------------------------------------------------------------------------------


def module_names() -> list[str]:
    """Every module of the core and bots packages that exists right now."""
    return list(project_modules())


# Runs in a fresh interpreter: records every audit event that would mean real work, per module imported.
PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    sys.path.insert(0, {repo!r})
    current = ["(start)"]
    seen = []
    WATCHED = {{
        "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
        "sqlite3.connect", "subprocess.Popen", "os.system", "os.fork", "os.exec", "os.posix_spawn",
        "_thread.start_new_thread", "os.mkdir", "os.rename", "os.remove", "shutil.rmtree",
        "urllib.Request",
    }}
    def hook(event, args):
        if event in WATCHED:
            seen.append([current[0], event, repr(args)[:200]])
        elif event == "open" and len(args) >= 2:
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & 0o3  # O_WRONLY | O_RDWR
            )
            if writes:
                seen.append([current[0], "open for writing", repr(args)[:200]])
    sys.addaudithook(hook)
    failed = []
    for name in {modules!r}:
        current[0] = name
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append([name, type(exc).__name__ + ": " + str(exc)])
    print(json.dumps({{"events": seen, "failed": failed}}))
    """
)


@pytest.fixture(scope="module")
def import_probe(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[list[str]]], Path, float]:
    workdir = tmp_path_factory.mktemp("import-probe")
    code = PROBE.format(repo=str(REPO), modules=module_names())
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-B", "-c", code],
        env={},  # no secrets, no URLs, no config path
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), workdir, elapsed


def test_import_probe_covers_core_and_bots() -> None:
    names = module_names()
    assert {"core", "core.rules", "core.storage", "bots", "bots.cli"} <= set(names)


def test_every_module_imports_in_an_empty_environment(
    import_probe: tuple[dict[str, list[list[str]]], Path, float],
) -> None:
    report, _, _ = import_probe
    assert report["failed"] == []


def test_importing_does_no_network_database_process_or_file_work(
    import_probe: tuple[dict[str, list[list[str]]], Path, float],
) -> None:
    report, _, _ = import_probe
    assert report["events"] == []


def test_importing_creates_no_files(import_probe: tuple[dict[str, list[list[str]]], Path, float]) -> None:
    _, workdir, _ = import_probe
    assert sorted(p.name for p in workdir.iterdir()) == []


def test_importing_everything_is_quick(import_probe: tuple[dict[str, list[list[str]]], Path, float]) -> None:
    _, _, elapsed = import_probe
    assert elapsed < 20, f"importing core and bots took {elapsed:.1f}s: something works at import time"


# --------------------------------------------------------------------------------------------------------------
# The tree shows the architecture (practice 8): one package per platform, no cycles, no cross-platform imports
# --------------------------------------------------------------------------------------------------------------

PLATFORM_PACKAGES = ("bots.slack", "bots.discord", "bots.terminal")


def internal_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at any depth (inside functions and `if TYPE_CHECKING:` too):
    `from a.b import c` counts as `a.b.c` when that is a module, else as `a.b`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in known:
                    found.add(child)
                elif node.module in known:
                    found.add(node.module)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: internal_imports(path, known) - {name} for name, path in modules.items()}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in (CORE, BOTS):
        for path in sorted(package.rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path `[a, b, ..., a]`, or `[]`: a depth-first search with colours."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return []
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return []


def test_cycle_finder_sees_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_from_imports_of_modules_and_of_names(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("from pkg import two\nfrom pkg.three import thing\n", encoding="utf-8")
    known = {"pkg", "pkg.two", "pkg.three", "pkg.one"}
    assert internal_imports(tmp_path / "one.py", known) == {"pkg.two", "pkg.three"}


def test_no_import_cycles_in_core_or_bots() -> None:
    graph = import_graph(project_modules())
    assert graph["bots.supervisor"], "the graph is empty: the scan found no imports"
    cycle = find_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package", PLATFORM_PACKAGES)
def test_a_platform_package_never_imports_another(package: str) -> None:
    modules = project_modules()
    others = tuple(p for p in PLATFORM_PACKAGES if p != package)
    crossing = {
        name: sorted(target for target in targets if target.startswith(others))
        for name, targets in import_graph(modules).items()
        if name == package or name.startswith(package + ".")
    }
    assert {name for name in modules if name.startswith(package + ".")}, f"{package} has no modules"
    assert {name: targets for name, targets in crossing.items() if targets} == {}


def test_bots_top_level_is_the_process_shell_only() -> None:
    flat = sorted(p.name for p in BOTS.glob("*.py"))
    assert [name for name in flat if name.startswith(("slack_", "discord_", "terminal_"))] == []
    assert len(flat) <= 12, flat
    assert {"slack", "discord", "terminal"} <= {p.name for p in BOTS.iterdir() if (p / "__init__.py").exists()}


def test_only_absolute_imports_in_core_and_bots() -> None:
    relative_imports = []
    for name, path in project_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.ImportFrom) and node.level > 0 for node in ast.walk(tree)):
            relative_imports.append(name)
    assert relative_imports == []
