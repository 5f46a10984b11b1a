"""Entry point of the ``molt`` command: one Typer app, one sub-app per area."""

from __future__ import annotations

import typer

from molt.cli import sandbox
from molt.cli.demo import demo_command
from molt.cli.drain import drain_command
from molt.cli.history import history_command
from molt.cli.plan import plan_command
from molt.cli.run import run_command
from molt.cli.simulate import simulate_command
from molt.cli.snapshot import snapshot_command
from molt.cli.status import status_command
from molt.cli.why import why_command

app = typer.Typer(
    name="molt",
    help=(
        "Molt keeps Kubernetes nodes ephemeral: no node lives past its maximum age, and every\n"
        "upgrade or fix is a replacement that never breaks a PodDisruptionBudget."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.command("run")(run_command)
app.command("plan")(plan_command)
app.command("why")(why_command)
app.command("status")(status_command)
app.command("drain")(drain_command)
app.command("simulate")(simulate_command)
app.command("snapshot")(snapshot_command)
app.command("demo")(demo_command)
app.command("history")(history_command)
app.add_typer(sandbox.app, name="sandbox")


if __name__ == "__main__":
    app()
