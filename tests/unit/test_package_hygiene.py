"""
Issue 10 ("small things a new user hits"): the package imports everywhere and its docs do not drift.

- ``import statemachine_orch`` (and running an engine on a SQLite file) needs no
  POSIX-only module: with ``fcntl`` and its kin made unimportable, as on Windows,
  a child process imports the package and runs a workflow on SQLite. Platform
  code belongs behind the store that needs it, imported when that store is used.
- Version directives (``versionadded::``/``versionchanged::``) never name a
  version newer than the package's own: the docs of a 0.1.0 package say nothing
  about 0.2.0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

POSIX_ONLY = ("fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog", "posixpath_only")
"""Modules that do not exist on Windows (the last is a stand-in that exists nowhere)."""

BLOCKER = f"""
import sys

class NotOnThisPlatform:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {POSIX_ONLY!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test, as on Windows)")
        return None

for name in {POSIX_ONLY!r}:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, NotOnThisPlatform())
"""

SCENARIO = """
import asyncio, json, os, sys, tempfile

import statemachine_orch
import statemachine_orch.testing
from statemachine_orch import Ctx, Engine, SqliteStore, Workflow, step


class Hello(Workflow):
    greeted: bool = False

    @step(initial=True, final=True)
    def greet(self, ctx: Ctx) -> None:
        self.greeted = True


async def main(path: str) -> str:
    with SqliteStore(path) as store:
        async with Engine(store) as engine:
            return (await (await engine.start(Hello())).wait_idle()).value


with tempfile.TemporaryDirectory() as tmp:
    status = asyncio.run(main(os.path.join(tmp, "hello.db")))
print(json.dumps({"status": status, "loaded": sorted(m for m in sys.modules if m in %r)}))
"""


def test_the_package_imports_and_runs_on_sqlite_without_posix_only_modules() -> None:
    """Issue 10: with fcntl & co. unimportable (as on Windows), import statemachine_orch works and SQLite runs."""
    code = textwrap.dedent(BLOCKER) + textwrap.dedent(SCENARIO % (POSIX_ONLY,))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == done.returncode, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"status": "completed", "loaded": []} == out


_DIRECTIVE = re.compile(r"\.\. version(added|changed):: (\d+(?:\.\d+)*)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_no_version_directive_is_newer_than_the_package() -> None:
    """Issue 10: a 0.1.0 package's docstrings and docs do not say `versionadded:: 0.2.0`."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        package = str(tomllib.load(f)["project"]["version"])
    files = [*sorted((ROOT / "statemachine_orch").rglob("*.py")), *sorted(ROOT.glob("*.md"))]
    files += sorted((ROOT / "dsl").rglob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    newer = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for path in files
        for text in [path.read_text(encoding="utf-8")]
        for m in _DIRECTIVE.finditer(text)
        if _version(m.group(2)) > _version(package)
    ]
    assert not newer, f"the package is {package}:\n" + "\n".join(newer)
