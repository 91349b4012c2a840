"""``hivemem bus serve`` stops on SIGTERM whenever the signal finds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# ``hivemem bus serve`` run in a process that sends itself SIGTERM at one moment: when
# serve_forever's wait on the stop Event has just taken that Event's lock back (as it
# does for a few bytecodes each second). The handler runs right there, in the main thread.
SIGTERM_WHILE_WAITING = """
import os, signal, sys, threading
from hivemem.platform.cli import main

sent = False

def calls(frame, event, arg):
    code = frame.f_code
    return waits if code.co_filename == threading.__file__ and code.co_name == "wait" else None

def waits(frame, event, arg):
    global sent
    outer = frame.f_back.f_back  # Condition.wait <- Event.wait <- serve_forever
    if event == "return" and not sent and outer is not None and (
        outer.f_code.co_name == "serve_forever"
    ):
        sent = True
        sys.settrace(None)
        print("SIGTERM sent", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this returns
    return waits

sys.settrace(calls)
sys.argv = ["hivemem", "bus", "serve", *sys.argv[1:]]
main()
"""


def test_serve_stops_on_a_sigterm_that_comes_while_its_wait_holds_a_lock(tmp_path: Path) -> None:
    """The handler set the stop Event, whose lock the interrupted main thread held: it
    waited for ever, and so did the server (a test's ServerProcess outlived its killed
    parent, whose death sends it SIGTERM)."""
    serve = [sys.executable, "-c", SIGTERM_WHILE_WAITING, "--port", "0", "--pub-port", "0",
             "--data-dir", str(tmp_path / "data"), "--secret-file", str(tmp_path / "secret")]  # fmt: skip
    proc = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the server still ran 60 s after its SIGTERM:\n{err}")
    assert "SIGTERM sent" in err  # else the signal came at another moment
    assert proc.returncode == 0, err
