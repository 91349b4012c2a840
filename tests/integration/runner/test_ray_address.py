"""A Ray address where nothing listens is refused at once with one clear error, before
``ray.init`` (which retries such an address for ever). No Ray is started: the check runs
first, on a loopback port nobody listens on."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hivemem.memory_bus.errors import ConfigError
from hivemem.platform.host_pool import check_ray_address


def closed_port() -> int:
    """A loopback port that was free a moment ago (bound, then closed: nothing listens)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(30)  # a hang fails the test instead of stalling the suite
@pytest.mark.parametrize("form", ["127.0.0.1:{}", "ray://127.0.0.1:{}", "localhost:{}"])
def test_an_address_with_no_cluster_is_refused_at_once(form: str) -> None:
    address = form.format(closed_port())
    with pytest.raises(ConfigError) as caught:
        check_ray_address(address)
    assert str(caught.value) == f"no Ray cluster at {address} (check --address / RAY_ADDRESS)"
    assert caught.value.details == {"address": address}


@pytest.mark.timeout(30)
def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"no Ray cluster at nosuchhost\.invalid:6379"):
        check_ray_address("nosuchhost.invalid:6379")


def test_a_listening_address_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize("address", ["local", "http://127.0.0.1:8265"])
def test_forms_without_a_host_and_port_are_left_to_ray(address: str) -> None:
    check_ray_address(address)  # Ray decides (local: starts one; others: its own error)


def test_auto_is_checked_where_ray_would_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` means RAY_ADDRESS when set, as ray.init reads it."""
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ConfigError, match=re.escape(f"no Ray cluster at {address} ")):
        check_ray_address("auto")


@pytest.mark.parametrize(
    "command",
    [
        ["run", "relay_qa", "--no-baseline"],
        ["compare", "relay_qa", "--seeds", "1", "--no-baseline"],
        ["train", "capacity_stream", "--workers", "1", "--iterations", "1", "--pairs", "1"],
    ],
)
def test_the_cli_stops_at_once_on_an_address_with_no_cluster(
    command: list[str], tmp_path: Path
) -> None:
    """The real CLI in its own process (this one may have joined Ray already, and then
    never connects again); it hung for ever in ``ray.init`` before (train: a traceback)."""
    address = f"127.0.0.1:{closed_port()}"
    argv = [*command, "--address", address, "--set", "run.ticks=1"]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "hivemem"), *argv, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,  # raises (fails the test) on the hang
        check=False,
    )
    assert proc.returncode == 1  # a failure once started: the cluster may come back
    assert proc.stderr.startswith(
        f"error: no Ray cluster at {address} (check --address / RAY_ADDRESS)"
    )
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("out/*"))  # no run folder: nothing was run
