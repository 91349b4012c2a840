"""The ``hivemem`` command line."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

import typer
from hivemem.memory_bus.config import StoreConfig

app = typer.Typer(no_args_is_help=True, help="Simulate many AI agents that share memory.")
bus_app = typer.Typer(no_args_is_help=True, help="The memory bus service.")
app.add_typer(bus_app, name="bus")


@app.command()
def version() -> None:
    """Print the installed hivemem version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("hivemem"))


@bus_app.command("serve")
def bus_serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(7777, help="ROUTER port for requests (0: any free port)."),
    pub_port: int = typer.Option(0, help="PUB port for memory events (0: any free port)."),
    data_dir: Path | None = typer.Option(
        None, help="Journal and snapshots; without it nothing survives a restart."
    ),
    fsync: str = typer.Option("everysec", help="always | everysec | no (as Redis's appendfsync)."),
    snapshot_every: int = typer.Option(50_000, help="Journal records between snapshots."),
    secret_file: Path | None = typer.Option(
        None, help="Bus secret for agent tokens; created if missing."
    ),
    config: Path | None = typer.Option(
        None, help="Store configuration (JSON or YAML of StoreConfig)."
    ),
    metrics_port: int | None = typer.Option(None, help="Expose Prometheus /metrics on this port."),
    metrics_host: str = typer.Option("127.0.0.1", help="Interface for /metrics."),
    curve_secret_key: Path | None = typer.Option(None, help="Server CURVE secret certificate."),
    curve_public_keys: Path | None = typer.Option(
        None, help="Directory of allowed client certificates."
    ),
) -> None:
    """Run a standalone bus server until interrupted."""
    from hivemem.memory_bus.auth import new_secret
    from hivemem.memory_bus.journal import Journal
    from hivemem.memory_bus.server import BusServer, CurveConfig
    from hivemem.memory_bus.store import MemoryStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    secret = _secret(secret_file, new_secret)
    curve = None
    if curve_secret_key is not None or curve_public_keys is not None:
        if curve_secret_key is None or curve_public_keys is None:
            raise typer.BadParameter("CURVE needs both --curve-secret-key and --curve-public-keys")
        curve = CurveConfig(curve_secret_key, curve_public_keys)
    journal = Journal(data_dir, fsync) if data_dir is not None else None
    server = BusServer(
        MemoryStore(_store_config(config)),
        host=host,
        port=port,
        pub_port=pub_port,
        secret=secret,
        journal=journal,
        snapshot_every=snapshot_every,
        curve=curve,
    )
    if metrics_port is not None:
        server.metrics.serve(metrics_port, metrics_host)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    typer.echo(
        f"hivemem bus serving on {server.address} (events on {server.pub_address})", err=True
    )
    server.serve_forever()


def _secret(path: Path | None, make: Callable[[], bytes]) -> bytes | None:
    if path is None:
        return None
    if not path.exists():
        path.write_bytes(make())
        path.chmod(0o600)
    return path.read_bytes()


def _store_config(path: Path | None) -> StoreConfig:
    if path is None:
        return StoreConfig()
    import yaml

    return StoreConfig.model_validate(yaml.safe_load(path.read_text()))


def main() -> None:
    """Entry point of the ``hivemem`` script."""
    app()


if __name__ == "__main__":
    main()
