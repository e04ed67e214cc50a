"""The image as the Dockerfile describes it stays the environment scripts/wheel_check.sh builds and runs (CI has no
Docker daemon): the runtime lock with hashes, the wheel without dependencies, a user that is not root, the port Cloud
Run gives, and `stratus-db serve` as the command, without migrating."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest))
    return found


def stage_starts(steps: list[tuple[str, str]]) -> list[int]:
    return [index for index, (keyword, _rest) in enumerate(steps) if keyword == "FROM"]


def test_the_image_is_built_in_two_stages_and_runs_the_service_as_a_plain_user() -> None:
    steps = instructions()
    stages = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith("AS build")
    runtime = steps[stage_starts(steps)[1] :]
    installs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert "--require-hashes -r /tmp/runtime.txt" in installs
    assert "--no-deps /tmp/wheels/*.whl" in installs
    assert "pip check" in installs
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == ["stratus"]
    assert ("CMD", '["stratus-db", "serve"]') in runtime
    assert not any("migrate" in rest for keyword, rest in runtime if keyword in ("CMD", "ENTRYPOINT", "RUN"))
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "PORT=8080" in env
    assert ("EXPOSE", "8080") in runtime


def test_the_build_stage_takes_pinned_tools_and_the_context_only_what_it_needs() -> None:
    steps = instructions()
    first, second = stage_starts(steps)
    build = steps[first:second]
    assert any(
        "--require-hashes -r requirements/build.txt" in rest for keyword, rest in build if keyword == "RUN"
    )
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignored[0] == "*", "everything is left out of the build context unless named"
    copied = {
        rest.split()[0] for keyword, rest in steps if keyword == "COPY" and not rest.startswith("--from")
    }
    for source in copied:
        assert (
            f"!{source.rstrip('/')}" in [entry.rstrip("/") for entry in ignored] or f"!{source}" in ignored
        ), source
    lock = (ROOT / "requirements/build.txt").read_text(encoding="utf-8")
    assert "--hash=sha256:" in lock
    assert {"build", "setuptools"} <= {line.split("==")[0] for line in lock.splitlines() if "==" in line}


def test_the_ci_runs_the_image_steps() -> None:
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "make wheel-check" in ci
    check = (ROOT / "scripts/wheel_check.sh").read_text(encoding="utf-8")
    for step in (
        '--require-hashes -r "$root/requirements/runtime.txt"',
        '--no-deps "${wheel[0]}"',
        '"$venv/stratus-db" serve',
        'kill -TERM "$server"',
    ):
        assert step in check, step
