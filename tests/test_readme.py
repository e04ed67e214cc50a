"""The README as a newcomer reads it: its example runs as written (twice), and every setting is documented."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from stratus_db.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The API in a few lines") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the README's API section holds a Python example"
    return match.group(1)


def test_the_example_runs_as_written_and_again(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATABASE_URL", "STRATUS_", "OPENAI_", "ENVIRONMENT"))
    } | {"STRATUS_DATA_DIR": str(tmp_path), "STRATUS_ENV_FILE": ""}

    runs = [
        subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]

    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "João Silva prefers Cessna 172 - 1 message(s)"
        assert run.stderr == "", "the library prints nothing unless configured"
    with sqlite3.connect(tmp_path / "stratus.db") as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (1,), (
            "the second run found the pilot"
        )
        assert connection.execute("SELECT count(*) FROM conversations").fetchone() == (2,)


def test_every_setting_is_documented() -> None:
    documentation = README.read_text(encoding="utf-8") + "".join(
        page.read_text(encoding="utf-8") for page in (ROOT / "docs").glob("*.md")
    )
    assert [name for name in Settings.model_fields if f"`{name}`" not in documentation] == []
