"""The provider registry ``molt run`` builds from is the list the API accepts."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from typer.testing import CliRunner

from molt.api.instancegroup import Provider
from molt.cli.main import app
from molt.runtime.providers import PROVIDERS, unknown_providers


def test_every_provider_the_api_accepts_can_be_built_and_no_other() -> None:
    assert set(PROVIDERS) == set(get_args(Provider))


def test_an_unknown_provider_is_named_and_the_known_ones_listed(tmp_path: Path) -> None:
    assert unknown_providers(("kwok", "gce", "aws")) == ["gce"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(app, ["run", "--provider", "gce", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert "unknown --provider 'gce' (use kwok, aws or baremetal)" in result.output
