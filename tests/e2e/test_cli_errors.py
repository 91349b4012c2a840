"""Bad input to ``hivemem`` ends in one ``error: ...`` line (no traceback), before Ray
starts where the command would start it, and ``--metrics-port 0`` says the port it got."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import RAY_STARTING, hivemem

ROOT = Path(__file__).resolve().parents[2]

CLI = [sys.executable, "-m", "hivemem.platform.cli"]


def ours(stderr: str) -> list[str]:
    """The lines of ``stderr`` that hivemem wrote (not Ray's start-up log)."""
    return [line for line in stderr.splitlines() if not RAY_STARTING.search(line)]


def one_error(proc: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """``proc`` exited with ``code`` after one ``error:`` line saying ``says``, and no Ray."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
    (line,) = ours(proc.stderr)
    assert line.startswith("error: ") and says in line, line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket holds (listening) while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_run_on_a_metrics_port_in_use_is_one_line(busy_port: int, tmp_path: Path) -> None:
    port = str(busy_port)
    proc = hivemem("run", "relay_qa", "--metrics-port", port, "--out", str(tmp_path), timeout=60)
    one_error(proc, 1, f"cannot serve /metrics on 127.0.0.1:{busy_port} (--metrics-port)")


def test_run_on_a_metrics_host_that_is_no_address_is_one_line(tmp_path: Path) -> None:
    proc = hivemem(
        "run", "relay_qa", "--metrics-port", "0", "--metrics-host", "256.1.1.1",
        "--out", str(tmp_path), timeout=60,
    )  # fmt: skip
    one_error(proc, 1, "cannot serve /metrics on 256.1.1.1:0 (--metrics-port)")


@pytest.mark.parametrize("command", ["run", "compare"])
def test_an_out_that_is_a_file_is_refused_before_ray(command: str, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    scenario = ["relay_qa"] if command == "run" else ["capacity_stream", "--eviction", "lru"]
    proc = hivemem(command, *scenario, "--out", str(a_file), "--set", "run.ticks=1", timeout=60)
    one_error(proc, 2, f"cannot create the output folder {a_file} (--out)")


def test_schema_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "schema.json"
    one_error(hivemem("schema", "--out", str(target)), 2, f"cannot write {target} (--out)")


def test_run_says_the_metrics_port_it_got(tmp_path: Path) -> None:
    """--metrics-port 0 is any free port: the line says which, not ':0'."""
    proc = hivemem(
        "run", "relay_qa", "--metrics-port", "0", "--no-progress", "--out", str(tmp_path),
        "--set", "run.ticks=1", "--set", "agents.0.count=1", "--set", "agents.1.count=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.stderr)
    assert found is not None, proc.stderr[-3000:]
    assert int(found.group(1)) > 0


def test_bus_serve_says_where_its_metrics_are(tmp_path: Path) -> None:
    """The "serving on" line names the /metrics address, with the port it got; the
    address answers a scrape with the bus's series."""
    serve = subprocess.Popen(
        [*CLI, "bus", "serve", "--port", "0", "--pub-port", "0", "--metrics-port", "0",
         "--spin-us", "0", "--secret-file", str(tmp_path / "secret")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serve.stderr is not None
        line = ""
        for line in serve.stderr:  # the server's log lines come first
            if "serving on" in line:
                break
        found = re.search(r"metrics on (http://127\.0\.0\.1:(\d+)/metrics)", line)
        assert found is not None, line
        assert int(found.group(2)) > 0
        with urllib.request.urlopen(found.group(1), timeout=30) as page:
            assert "hivemem_bus_" in page.read().decode()
    finally:
        serve.terminate()
        serve.communicate(timeout=60)


def test_compare_refuses_eviction_on_a_tier_with_no_capacity(tmp_path: Path) -> None:
    """capacity_stream's graph tier holds everything: every eviction policy would give
    the same rows."""
    proc = hivemem(
        "compare", "capacity_stream", "--tier", "graph", "--eviction", "lru,fifo",
        "--out", str(tmp_path), timeout=60,
    )  # fmt: skip
    one_error(proc, 2, "graph tier of 'capacity_stream' has no capacity")
    assert not any(tmp_path.iterdir())


def test_compare_takes_each_policy_name_as_it_is_not_as_yaml(tmp_path: Path) -> None:
    """``learned:PATH`` with ": " in PATH was read as a YAML mapping ("Input should be a
    valid string"); it is a name, so the message is about the missing checkpoint."""
    checkpoint = tmp_path / "run: 2.json"
    proc = hivemem(
        "compare", "capacity_stream", "--eviction", f"learned:{checkpoint}",
        "--out", str(tmp_path), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"no policy checkpoint at {checkpoint}" in proc.stderr, proc.stderr[-3000:]


def test_train_resume_with_no_saved_state_is_refused(tmp_path: Path) -> None:
    """A mistyped --out with --resume would otherwise train from scratch, quietly."""
    typo = tmp_path / "typo"
    proc = hivemem(
        "train", "capacity_stream", "--resume", "--out", str(typo), "--workers", "0",
        "--iterations", "1", "--pairs", "1", "--set", "run.ticks=5", timeout=60,
    )  # fmt: skip
    one_error(proc, 2, f"{typo}")
    assert "train_state.json" in proc.stderr and "--resume" in proc.stderr
    assert not (typo / "policy.json").exists()


LOGGED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
"""A line of ``bus serve``'s log (its time first), not one of its messages."""

NOWHERE = ["-a", "tcp://127.0.0.1:1", "--timeout", "0.5"]
"""A bus address no bus answers at."""

# (arguments, exit status, what the first line starts with); {T}: a folder of bad files,
# {BUSY}: a port another socket holds. Click's own usage errors keep click's message.
ERRORS = [
    (["run", "nosuch"], 2, "error: nosuch: 1 problem(s)"),
    (["run", "relay_qa", "--set", "run.tiks=3"], 2, "error: builtin:relay_qa: 1 problem(s)"),
    (["run", "relay_qa", "--metrics-port", "99999"], 2, "Usage:"),
    (["run", "relay_qa", "--metrics-port", "{BUSY}", "--out", "{T}"], 1, "error: cannot serve"),
    (["compare", "nosuch", "--eviction", "lru"], 2, "error: nosuch: 1 problem(s)"),
    (["compare", "relay_qa", "--tier", "nosuch", "--eviction", "lru"], 2, "error: unknown tier"),
    (["compare", "relay_qa", "--out", "{T}/bad.yaml"], 2, "error: cannot create the output"),
    (["compare", "capacity_stream", "--eviction", "lru,,fifo"], 2,
     "error: --eviction 'lru,,fifo': an empty policy name"),
    (["compare", "capacity_stream", "--write", ""], 2, "error: --write '': an empty policy"),
    (["compare", "capacity_stream", "--eviction", "lru,fifo,lru", "--seeds", "1",
      "--set", "run.ticks=1", "--no-baseline"], 2,
     "error: --eviction 'lru,fifo,lru' names 'lru' more than once"),
    (["train", "nosuch"], 2, "error: nosuch: 1 problem(s)"),
    (["train", "capacity_stream", "--method", "nosuch", "--workers", "0"], 2, "error: unknown"),
    (["eval", "{T}/bad.json"], 2, "error: cannot read policy checkpoint"),
    (["eval", "{T}/nosuch.json"], 2, "error: no policy checkpoint"),
    (["validate", "nosuch"], 1, "error: nosuch: 1 problem(s)"),
    (["validate", "{T}/latin1.yaml"], 1, "error: {T}/latin1.yaml: 1 problem(s)"),
    (["run", "{T}/latin1.yaml"], 2, "error: {T}/latin1.yaml: 1 problem(s)"),
    (["schema", "--out", "{T}/no/such.json"], 2, "error: cannot write"),
    (["bus", "serve", "--port", "0", "--config", "{T}/bad.yaml"], 2, "error: {T}/bad.yaml"),
    (["bus", "serve", "--port", "0", "--fsync", "sometimes"], 2, "error: --fsync 'sometimes'"),
    (["bus", "serve", "--port", "65535"], 2, "error: --port 65535 leaves no"),
    (["bus", "serve", "--port", "0", "--secret-file", "{T}/short"], 2, "error: the secret file"),
    (["bus", "serve", "--port", "0", "--data-dir", "/proc/x"], 2, "error: cannot use the data"),
    (["bus", "serve", "--curve-secret-key", "{T}/bad.key"], 2, "error: CURVE needs both"),
    (["bus", "serve", "--port", "0", "--curve-secret-key", "{T}/bad.key",
      "--curve-public-keys", "{T}/keys"], 2, "error: cannot load the CURVE secret key"),
    (["bus", "serve", "--port", "{BUSY}", "--pub-port", "0"], 1, "error: cannot bind"),
    (["bus", "serve", "--port", "0", "--metrics-port", "{BUSY}"], 1, "error: cannot serve"),
    (["bus", "check", "{T}/nosuch"], 2, "error: no data directory"),
    (["bus", "token", "alice", "--secret-file", "{T}/nosuch"], 2, "error: cannot read the secret"),
    (["bus", "token", "", "--secret-file", "{T}/short"], 2, "error: an agent id cannot be"),
    (["bus", "register", "", *NOWHERE, "--token", "x"], 2, "error: an agent id cannot be"),
    (["bus", "register", "a", "-g", "", *NOWHERE, "--token", "x"], 2,
     "error: --group '' names no group"),
    (["bus", "ping", *NOWHERE, "--secret-file", "{T}/empty"], 2, "error: the secret file"),
    (["bus", "stats", *NOWHERE], 2, "error: give --secret-file"),
    (["bus", "ping", *NOWHERE, "--token", "x", "--agent", ""], 2, "error: --agent names"),
    (["bus", "ping", "-a", ",", "--token", "x"], 2, "error: "),
    (["bus", "ping", *NOWHERE, "--token", "x", "--curve-key", "{T}/bad.key"], 2, "error: CURVE"),
    (["bus", "search", "private", "a", "q", "--method", "ppr", *NOWHERE, "--token", "x"], 2,
     "error: --method ranks graph nodes"),
    (["bus", "watch", "private", *NOWHERE, "--token", "x", "--count", "1"], 2, "error: topic"),
    (["bus", "items", "privte", "a", *NOWHERE, "--token", "x"], 2,
     "error: unknown tier 'privte'; did you mean 'private'?"),
    (["bus", "search", "privte", "a", "q", *NOWHERE, "--token", "x"], 2, "error: unknown tier"),
    (["bus", "search", "graph", "a", "q", "--method", "kop", *NOWHERE, "--token", "x"], 2,
     "error: unknown retrieval method 'kop'; did you mean 'khop'?"),
    (["bus", "watch", "privte/a", *NOWHERE, "--token", "x", "--count", "1"], 2,
     "error: unknown tier 'privte'"),
    (["bus", "ping", *NOWHERE, "--token", "x"], 1, "error: no reply"),
    (["bus", "items", "private", "a", *NOWHERE, "--token", "x"], 1, "error: no reply"),
    (["bus", "items", "private"], 2, "Usage:"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "bad.yaml").write_text("name: x\ntask: [unclosed\n")
    (folder / "bad.json").write_text("{not json")
    (folder / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    (folder / "bad.key").write_text("garbage")
    (folder / "short").write_bytes(b"too short")
    (folder / "empty").write_bytes(b"")
    (folder / "keys").mkdir()  # no client's certificate in it
    return folder


@pytest.mark.parametrize(
    ("args", "code", "first"), ERRORS, ids=[" ".join(a[:3]) for a, _, _ in ERRORS]
)
def test_every_command_ends_bad_input_in_one_error_line(
    args: list[str], code: int, first: str, bad_files: Path, busy_port: int
) -> None:
    """Exit 2 for bad input, 1 for a failure once started; the first line says which
    problem, and there is never a traceback."""

    def filled(text: str) -> str:
        return text.replace("{T}", str(bad_files)).replace("{BUSY}", str(busy_port))

    env = {k: v for k, v in os.environ.items() if k not in ("HIVEMEM_TOKEN", "RAY_ADDRESS")}
    proc = subprocess.run(
        [*CLI, *map(filled, args)], capture_output=True, text=True, timeout=120, env=env,
        cwd=bad_files, check=False,
    )  # fmt: skip
    lines = [line for line in ours(proc.stderr) if not LOGGED.match(line)]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines and lines[0].startswith(filled(first)), proc.stderr[-3000:]


@pytest.mark.parametrize("group", [(), ("bus",)])
def test_help_lists_each_command_summary_on_one_line(group: tuple[str, ...]) -> None:
    """Typer kept the docstrings' own line breaks in a group's list of commands, so
    ``train``'s summary broke after "(and, with" however wide the terminal was."""
    from hivemem.platform.bus_cli import bus_app
    from hivemem.platform.cli import app

    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", *group, "--help"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    commands = (bus_app if group else app).registered_commands
    assert len(commands) >= 6
    for info in commands:
        assert info.callback is not None and info.callback.__doc__
        summary = " ".join(info.callback.__doc__.split("\n\n")[0].split())
        assert any(summary in line for line in lines), (info.name, summary, proc.stdout)


def test_validate_builds_the_task_so_a_family_that_cannot_be_built_fails_there(
    tmp_path: Path,
) -> None:
    """A family of one's own whose constructor raises validated ``ok`` and failed the run
    after Ray had started; ``validate`` builds the task (and the baseline's) now."""
    (tmp_path / "broken_family.py").write_text(
        "from hivemem.scenarios.relay_qa import RelayQA\n\n"
        "class Broken(RelayQA):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        raise KeyError('facts')\n",
        encoding="utf-8",
    )
    text = (ROOT / "scenarios" / "relay_qa.yaml").read_text(encoding="utf-8")
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace("family: relay_qa", 'family: "broken_family:Broken"'), "utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", "validate", str(path), "relay_qa"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        "  - task.family: task family 'broken_family:Broken': building it raised KeyError: 'facts'"
        in proc.stderr.splitlines()
    )
    assert "relay_qa: ok" in proc.stdout
