"""docs/rl.md's environment example runs as written, and says what it gets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[3] / "docs" / "rl.md"


def test_the_pages_python_example_runs_and_sees_what_its_comment_says() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    scope: dict[str, Any] = {"__name__": "rl_doc"}
    exec(compile(block, str(PAGE), "exec"), scope)
    env, obs = scope["env"], scope["obs"]
    try:
        capacity = env.unwrapped.scenario.memory.private.capacity  # 12 in capacity_stream
        assert obs["features"].shape == (capacity, 9)
        assert obs["mask"].shape == (capacity,)
    finally:
        env.close()
