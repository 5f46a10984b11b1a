"""Find the control-plane binaries and the Go tools, or build them once from pinned Go modules.

The Go tools (``versions.GO_TOOLS``: helm, promtool) are found and built the same way as
the control plane, one cache directory per tool and version; ``tool_path(name)`` returns
one, building it when missing.

Lookup order for each binary, following envtest's convention:
``TEST_ASSET_<NAME>`` (e.g. ``TEST_ASSET_KUBE_APISERVER``), then ``KUBEBUILDER_ASSETS``,
then Molt's cache (``$MOLT_CACHE_DIR``, else ``$XDG_CACHE_HOME/molt``, else ``~/.cache/molt``)
under a directory named for the pinned version. Missing ones are built with the Go
toolchain into a temporary directory and moved into the cache whole, so an interrupted
build never leaves a half-filled cache behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from molt.sandbox import versions

Report = Callable[[str], None]

KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = ("etcd", *KUBERNETES_BINARIES, "kwok")


class BuildError(RuntimeError):
    """The Go toolchain failed or is missing; the message carries the tail of its output."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the sandbox runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path

    @classmethod
    def from_mapping(cls, paths: dict[str, Path]) -> Binaries:
        return cls(**{name.replace("-", "_"): paths[name] for name in ALL_BINARIES})


def cache_root() -> Path:
    """Where built binaries live, outside any repository."""
    if explicit := os.environ.get("MOLT_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "molt"


def _component_dirs() -> dict[str, Path]:
    root = cache_root() / "bin"
    kube = root / f"kubernetes-{versions.KUBERNETES}"
    return {
        "etcd": root / f"etcd-{versions.ETCD}",
        **{name: kube for name in KUBERNETES_BINARIES},
        "kwok": root / f"kwok-{versions.KWOK}",
    }


def _tool_dir(name: str) -> Path:
    tool = versions.GO_TOOLS[name]
    return cache_root() / "bin" / f"{name}-{tool.version}"


def _from_environment(name: str) -> Path | None:
    specific = os.environ.get("TEST_ASSET_" + name.upper().replace("-", "_"))
    if specific:
        return Path(specific)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    return None


def locate() -> dict[str, Path | None]:
    """Each binary's path if it is already available, else None."""
    found: dict[str, Path | None] = {}
    dirs = _component_dirs()
    for name in ALL_BINARIES:
        env_path = _from_environment(name)
        cached = dirs[name] / name
        found[name] = env_path or (cached if cached.is_file() else None)
    return found


def ensure_binaries(report: Report = print) -> Binaries:
    """Return every binary, building the missing ones (this can take several minutes)."""
    found = locate()
    missing = {name for name, path in found.items() if path is None}
    if missing:
        with _build_lock():
            found = locate()  # another process may have built them while we waited
            missing = {name for name, path in found.items() if path is None}
            if missing & {"etcd"}:
                _build_etcd(report)
            if missing & set(KUBERNETES_BINARIES):
                _build_kubernetes(report)
            if missing & {"kwok"}:
                _build_kwok(report)
            found = locate()
    absent = [name for name, path in found.items() if path is None or not path.is_file()]
    if absent:
        raise BuildError(f"still missing after the build: {', '.join(absent)}")
    return Binaries.from_mapping({k: v for k, v in found.items() if v is not None})


def locate_tool(name: str) -> Path | None:
    """A Go tool's path (``TEST_ASSET_HELM``, ``KUBEBUILDER_ASSETS`` or the cache), or None."""
    if name not in versions.GO_TOOLS:
        raise KeyError(f"unknown Go tool {name!r}; known: {', '.join(versions.GO_TOOLS)}")
    cached = _tool_dir(name) / name
    return _from_environment(name) or (cached if cached.is_file() else None)


def tool_path(name: str, report: Report = print) -> Path:
    """A Go tool's path, building it from its pinned module when missing (a minute or two)."""
    found = locate_tool(name)
    if found is None:
        with _build_lock():
            found = locate_tool(name)  # another process may have built it while we waited
            if found is None:
                _build_tool(name, report)
                found = locate_tool(name)
    if found is None or not found.is_file():
        raise BuildError(f"{name} still missing after the build")
    return found


def ensure_tools(report: Report = print) -> dict[str, Path]:
    """Every Go tool's path, building the missing ones."""
    return {name: tool_path(name, report) for name in versions.GO_TOOLS}


@contextmanager
def _build_lock() -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is needed to build the control plane and was not found on PATH; "
            "install Go, or point KUBEBUILDER_ASSETS at prebuilt binaries"
        )
    return go


def _run_go(
    args: list[str], cwd: Path, report: Report, what: str, extra_env: dict[str, str] | None = None
) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    env.update(extra_env or {})
    started = time.monotonic()
    report(f"  go {' '.join(args[:2])} ... ({what})")
    result = subprocess.run(
        [_go(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BuildError(f"building {what} failed (go {' '.join(args)}):\n{tail}")
    report(f"  ... done in {time.monotonic() - started:.0f}s")


def _install_dir(staging: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _wrapper_module(directory: Path, module: str, requires: list[str], replaces: list[str]) -> None:
    lines = [f"module {module}", "", "go 1.24.0", "", "godebug default=go1.24", ""]
    lines += [f"require {r}" for r in requires]
    lines += [f"replace {r}" for r in replaces]
    (directory / "go.mod").write_text("\n".join(lines) + "\n")


def _build_kubernetes(report: Report) -> None:
    version = versions.KUBERNETES
    report(f"Building Kubernetes {version} from Go modules (cold: about 7 minutes on 2 cores)")
    target = _component_dirs()["kube-apiserver"]
    with tempfile.TemporaryDirectory(prefix="molt-k8s-build-") as tmp:
        work = Path(tmp)
        _wrapper_module(
            work,
            "molt.dev/sandbox/kubernetes",
            [f"k8s.io/kubernetes {version}"],
            [
                f"k8s.io/{m} => k8s.io/{m} {versions.KUBERNETES_STAGING}"
                for m in versions.STAGING_MODULES
            ],
        )
        commands = [f"k8s.io/kubernetes/cmd/{b}" for b in KUBERNETES_BINARIES]
        _run_go(["get", *[f"{c}@{version}" for c in commands]], work, report, "module download")
        minor = version.lstrip("v").split(".")[1]
        ldflags = " ".join(
            [
                f"-X k8s.io/component-base/version.gitVersion={version}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
            ]
        )
        out = work / "out"
        out.mkdir()
        _run_go(
            ["build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{out}/", *commands],
            work,
            report,
            "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl",
        )
        _install_dir(out, target)


def _build_etcd(report: Report) -> None:
    version = versions.ETCD
    report(f"Building etcd {version} from Go modules")
    with tempfile.TemporaryDirectory(prefix="molt-etcd-build-") as tmp:
        work = Path(tmp)
        # etcd's server module replaces its sibling modules locally, so pin them all here.
        _wrapper_module(
            work,
            "molt.dev/sandbox/etcd",
            [f"go.etcd.io/etcd/{m} {version}" for m in versions.ETCD_MODULES],
            [],
        )
        _run_go(["get", f"go.etcd.io/etcd/server/v3@{version}"], work, report, "module download")
        out = work / "out"
        out.mkdir()
        _run_go(
            ["build", "-trimpath", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"],
            work,
            report,
            "etcd",
        )
        _install_dir(out, _component_dirs()["etcd"])


def _build_kwok(report: Report) -> None:
    version = versions.KWOK
    report(f"Building kwok {version}")
    with tempfile.TemporaryDirectory(prefix="molt-kwok-build-") as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        _run_go(
            ["install", f"sigs.k8s.io/kwok/cmd/kwok@{version}"],
            work,
            report,
            "kwok",
            {"GOBIN": str(out), "GOFLAGS": ""},
        )
        _install_dir(out, _component_dirs()["kwok"])


def _build_tool(name: str, report: Report) -> None:
    tool = versions.GO_TOOLS[name]
    report(f"Building {name} {tool.version}")
    with tempfile.TemporaryDirectory(prefix=f"molt-{name}-build-") as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        args = ["install", "-trimpath"]
        if tool.ldflags:
            args.append(f"-ldflags={' '.join(tool.ldflags)}")
        _run_go(
            [*args, f"{tool.package}@{tool.version}"],
            work,
            report,
            name,
            {"GOBIN": str(out), "GOFLAGS": ""},
        )
        _install_dir(out, _tool_dir(name))


def main(argv: list[str]) -> int:
    """No argument: build or find everything. ``--path TOOL``: print one Go tool's path."""
    if len(argv) == 2 and argv[0] == "--path":
        print(tool_path(argv[1], report=lambda line: print(line, file=sys.stderr)))
        return 0
    if argv:
        print("usage: python -m molt.sandbox.binaries [--path TOOL]", file=sys.stderr)
        return 2
    started = time.monotonic()
    built = ensure_binaries()
    for field_name, path in vars(built).items():
        print(f"  {field_name:<24} {path}")
    for name, path in ensure_tools().items():
        print(f"  {name:<24} {path}")
    print(f"control-plane binaries and tools ready ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
