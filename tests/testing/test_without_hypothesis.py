"""
Issue 11 (Also): hypothesis is the ``testing`` extra; without it, the toolkit says how to install it.

In a child process with hypothesis made unimportable (a meta path finder that
raises ImportError): the package and its engine work, ``import
statemachine_orch.testing`` raises an ImportError naming the extra, and a pytest
run with the plugin loaded still runs its tests, its ``orch_engine`` fixture
saying what to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("hypothesis", "_hypothesis_pytestplugin"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def run_child(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # Only our plugin: the others installed here (schemathesis...) need hypothesis themselves.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_toolkit_without_hypothesis_says_how_to_install_it() -> None:
    """Issue 11: the ImportError names the extra; the package itself imports and runs a workflow."""
    done = run_child(
        BLOCKER
        + """
import asyncio
from statemachine_orch import Ctx, Engine, MemoryStore, Workflow, step

class Hello(Workflow):
    @step(initial=True, final=True)
    def greet(self, ctx: Ctx) -> None: ...

async def main() -> str:
    async with Engine(MemoryStore()) as engine:
        return (await (await engine.start(Hello())).wait_idle()).value

print(asyncio.run(main()))
try:
    import statemachine_orch.testing
except ImportError as exc:
    print(exc)
"""
    )

    assert 0 == done.returncode, done.stderr
    said = (
        "statemachine_orch.testing needs hypothesis, which is not installed; install the testing extra: "
        "pip install 'statemachine-orch[testing]'"
    )
    assert ["completed", said] == done.stdout.strip().splitlines()


def test_the_pytest_plugin_stays_out_of_the_way_without_hypothesis(tmp_path: Path) -> None:
    """Issue 11: pytest runs with the plugin loaded; a test asking for orch_engine errors, saying what to install."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            def test_plain() -> None:
                assert 1 + 1 == 2

            def test_engine(orch_engine) -> None:
                pass
            """
        )
    )
    done = run_child(
        BLOCKER
        + f"""
import pytest
raise SystemExit(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "statemachine_orch.pytest_plugin", {str(tmp_path)!r}]))
""",
        cwd=tmp_path,
    )

    assert "1 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert "pip install 'statemachine-orch[testing]'" in done.stdout
