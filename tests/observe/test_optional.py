"""
Issue 12: prometheus-client and opentelemetry are optional extras.

Importing the package and running an engine imports neither; with both made
unimportable (a meta path finder that raises ImportError, in a child process),
the engine runs as before, ``Metrics()`` and ``Engine(tracing=True)`` fail with
an ImportError that names the extra to install.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NotInstalled())
"""

SCENARIO = """
import asyncio, json, sys

from statemachine_orch import Ctx, Engine, MemoryStore, Workflow, step
from statemachine_orch.metrics import Metrics


class Hello(Workflow):
    @step(initial=True, final=True)
    def greet(self, ctx: Ctx) -> None: ...


async def main() -> str:
    async with Engine(MemoryStore(), logs=True) as engine:
        return (await (await engine.start(Hello())).wait_idle()).value


out = {"status": asyncio.run(main())}
for name, make in (("metrics", Metrics), ("tracing", lambda: Engine(tracing=True))):
    try:
        make()
    except ImportError as exc:
        out[name] = str(exc)
    else:
        out[name] = "made"
out["imported"] = sorted(m for m in sys.modules if m.partition(".")[0] in ("prometheus_client", "opentelemetry"))
print(json.dumps(out))
"""


def run_child(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_without_the_extras_the_engine_runs_and_asking_for_them_names_the_extra() -> None:
    """Issue 12: neither installed: steps run (logs need only structlog); Metrics and tracing say what to install."""
    out = run_child(BLOCKER + SCENARIO)
    assert "completed" == out["status"]
    assert "'metrics' extra" in str(out["metrics"])
    assert "prometheus-client" in str(out["metrics"])
    assert "'otel' extra" in str(out["tracing"])
    assert [] == out["imported"]


def test_with_the_extras_installed_the_core_still_imports_neither_until_asked() -> None:
    """Issue 12: the package, an engine and its logs import no prometheus_client or opentelemetry module."""
    code = SCENARIO.replace(
        'out = {"status": asyncio.run(main())}',
        'out = {"status": asyncio.run(main())}\nbefore = sorted(sys.modules)',
    ).replace(
        'out["imported"] = sorted(m for m in sys.modules',
        'out["imported"] = sorted(m for m in before',
    )
    out = run_child(code)
    assert "completed" == out["status"]
    assert [] == out["imported"]
    assert "made" == out["metrics"]
    assert "made" == out["tracing"]
