"""The ``hivemem`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Simulate many AI agents that share memory.")


@app.command()
def version() -> None:
    """Print the installed hivemem version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("hivemem"))


def main() -> None:
    """Entry point of the ``hivemem`` script."""
    app()
