"""Go-built tools are found through TEST_ASSET_<NAME>, else in Molt's cache under a
directory named for the pinned version; unknown tools are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from molt.sandbox.tools import TOOLS, ensure_tool, locate_tool, tool_dir

pytestmark = pytest.mark.unit


def test_a_tool_is_cached_under_its_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TEST_ASSET_PROMTOOL", raising=False)
    assert tool_dir("promtool") == tmp_path / "bin" / f"promtool-{TOOLS['promtool'].version}"
    assert locate_tool("promtool") is None
    binary = tool_dir("promtool") / "promtool"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    assert ensure_tool("promtool") == binary  # found: nothing is built


def test_test_asset_points_at_a_prebuilt_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prebuilt = tmp_path / "my-promtool"
    prebuilt.write_text("")
    monkeypatch.setenv("TEST_ASSET_PROMTOOL", str(prebuilt))
    assert ensure_tool("promtool") == prebuilt


def test_an_unknown_tool_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown tool"):
        ensure_tool("kubectl-fly")
