"""Render Molt's Helm chart (``charts/molt``) with the pinned helm.

``deploy/molt.yaml`` is the chart rendered with its default values, CRDs included, for
installing without helm; ``make manifests`` rewrites it with ``python -m
molt.sandbox.chart``, and a test checks the committed file equals a fresh render.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from molt.sandbox.binaries import tool_path

RELEASE = "molt"
NAMESPACE = "molt"
HEADER = (
    "# Molt, rendered from charts/molt with its default values (release molt, namespace\n"
    "# molt) by `make manifests`; do not edit by hand.\n"
    "#   kubectl create namespace molt\n"
    "#   kubectl apply --server-side -f deploy/molt.yaml\n"
)


class RenderError(RuntimeError):
    """helm refused the chart; the message carries its output."""


def helm(helm_path: Path, *args: str) -> str:
    """Run helm; its standard output, or RenderError with what it printed."""
    result = subprocess.run(
        [str(helm_path), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RenderError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def template(
    helm_path: Path,
    chart: Path,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    values: dict[str, Any] | None = None,
    include_crds: bool = False,
) -> str:
    """``helm template`` of the chart, with ``values`` over its defaults."""
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="molt-values-") as file:
        if values:
            yaml.safe_dump(values, file)
            file.flush()
            args += ["--values", file.name]
        return helm(helm_path, *args)


def default_manifests(helm_path: Path, chart: Path) -> str:
    """The text committed as ``deploy/molt.yaml``."""
    return HEADER + template(helm_path, chart, include_crds=True)


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a render."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m molt.sandbox.chart CHART_DIR OUTPUT", file=sys.stderr)
        return 2
    chart, output = Path(argv[0]), Path(argv[1])
    path = tool_path("helm", report=lambda line: print(line, file=sys.stderr))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(default_manifests(path, chart))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
