"""The Go tools (helm, promtool) are found like the control plane: an envtest-style
override first, else the cache directory named for the pinned version."""

from __future__ import annotations

from pathlib import Path

import pytest

from molt.sandbox import binaries, versions


def test_every_tool_is_pinned_to_a_released_version() -> None:
    assert set(versions.GO_TOOLS) >= {"helm", "promtool"}
    for tool in versions.GO_TOOLS.values():
        assert tool.version.startswith("v")
        assert "@" not in tool.package


def test_a_tool_is_looked_up_in_the_cache_under_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TEST_ASSET_HELM", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    assert binaries.locate_tool("helm") is None
    cached = tmp_path / "bin" / f"helm-{versions.HELM}" / "helm"
    cached.parent.mkdir(parents=True)
    cached.write_text("")
    assert binaries.locate_tool("helm") == cached
    assert binaries.tool_path("helm") == cached  # found: nothing is built


def test_an_override_wins_and_an_unknown_tool_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLT_CACHE_DIR", str(tmp_path))
    mine = tmp_path / "my-promtool"
    mine.write_text("")
    monkeypatch.setenv("TEST_ASSET_PROMTOOL", str(mine))
    assert binaries.locate_tool("promtool") == mine
    with pytest.raises(KeyError, match="unknown Go tool"):
        binaries.locate_tool("kubectx")
