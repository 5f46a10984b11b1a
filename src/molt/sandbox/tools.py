"""Go-built developer tools (promtool) that tests need, built once into Molt's cache.

Each tool is pinned here to a version of its Go module and installed with ``go install``
under ``<cache root>/bin/<name>-<version>/``, beside the control-plane binaries, so a new
pin builds beside the old one and nothing lands in the repository. ``TEST_ASSET_<NAME>``
(e.g. ``TEST_ASSET_PROMTOOL``) points at a prebuilt binary instead.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from molt.sandbox.binaries import BuildError, Report, _install_dir, _run_go, cache_root


@dataclass(frozen=True)
class Tool:
    """A command installed from a Go module at a pinned version."""

    package: str
    version: str


# Prometheus publishes release 3.N as module version v0.3NN.x.
TOOLS: dict[str, Tool] = {
    "promtool": Tool("github.com/prometheus/prometheus/cmd/promtool", "v0.316.0"),
}


def tool_dir(name: str) -> Path:
    """The cache directory of a tool's pinned version."""
    return cache_root() / "bin" / f"{name}-{TOOLS[name].version}"


def locate_tool(name: str) -> Path | None:
    """The tool's path if it is already available, else None."""
    if explicit := os.environ.get("TEST_ASSET_" + name.upper().replace("-", "_")):
        return Path(explicit)
    cached = tool_dir(name) / name
    return cached if cached.is_file() else None


def ensure_tool(name: str, report: Report = print) -> Path:
    """Return the tool's binary, building it first if needed (promtool: minutes, cold)."""
    if name not in TOOLS:
        raise KeyError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}")
    found = locate_tool(name)
    if found is None:
        with _tools_lock():
            found = locate_tool(name) or _build(name, report)
    if not found.is_file():
        raise BuildError(f"{name} is not a file: {found}")
    return found


@contextmanager
def _tools_lock() -> Iterator[None]:
    # A lock of its own, so a tool build does not wait for a control-plane build.
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".tools.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(name: str, report: Report) -> Path:
    tool = TOOLS[name]
    report(f"Building {name} {tool.version} from {tool.package}")
    with tempfile.TemporaryDirectory(prefix=f"molt-{name}-build-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        _run_go(
            ["install", "-trimpath", f"{tool.package}@{tool.version}"],
            Path(tmp),
            report,
            name,
            {"GOBIN": str(out), "GOFLAGS": ""},
        )
        _install_dir(out, tool_dir(name))
    return tool_dir(name) / name


if __name__ == "__main__":
    import sys

    for tool_name in sys.argv[1:] or sorted(TOOLS):
        print(ensure_tool(tool_name))
