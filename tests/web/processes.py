"""
``orch worker`` and ``orch serve`` as real processes for the web tests (issue 13).

``Fleet`` starts them on one store and stops them (SIGTERM, ``Workers.stop_all`` of the
command-line tests) when the test ends; each start waits for the line the process
writes once it runs, never a fixed time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import attrs
import pytest

from tests.cli.conftest import LIMIT, ROOT, Workers, environment


@attrs.define
class Fleet(Workers):
    """The processes of one test (``orch worker`` of any module, ``orch serve``): their logs are in *tmp*."""

    def _start(self, name: str, args: list[str], ready: re.Pattern[str]) -> re.Match[str]:
        log = self.tmp / f"{name}{len(self.started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "statemachine_orch", *args],
                cwd=ROOT,
                env=environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.started.append((proc, log))
        deadline = time.monotonic() + LIMIT
        while (found := ready.search(log.read_text())) is None:
            if proc.poll() is not None:
                pytest.fail(f"orch {name} exited with {proc.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"orch {name} did not start within {LIMIT} s: {log.read_text()}")
            time.sleep(0.05)
        return found

    def worker(self, store: str, module: str) -> None:
        """Start ``orch worker MODULE`` and wait until it runs."""
        self._start("worker", ["worker", module, "--store", store, "--poll", "0.02"], re.compile(r"orch worker \S+"))

    def server(self, store: str, module: str, *options: str) -> str:
        """Start ``orch serve MODULE`` on a free loopback port; its base URL once it listens."""
        args = ["serve", module, "--store", store, "--port", "0", *options]
        found = self._start("serve", args, re.compile(r"listening on (http://127\.0\.0\.1:\d+)"))
        return found.group(1)
