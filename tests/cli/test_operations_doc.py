"""
docs/operations.md runs (issue 12): its ``sh`` blocks, in order, as one shell script.

On a fresh SQLite file and on a fresh PostgreSQL database (the page's
``export ORCH_STORE=...`` line is pointed at the test's store), in a temporary
working directory, with the ``orch`` script of this environment. The worker the
page starts in the background is stopped by the page itself; if the script
fails, its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import ROOT, environment

DOC = ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
STORE_LINE = "export ORCH_STORE=sqlite:///orders.db"
SCRIPT_LIMIT = 240.0


def script(store: str) -> str:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) > 10
    body = "\n".join(blocks)
    assert STORE_LINE in body
    return "set -eu\n" + body.replace(STORE_LINE, f"export ORCH_STORE='{store}'")


def run_page(store: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_script(script(store), cwd)


def run_script(text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run *text* with bash in *cwd*, in a session of its own (killed afterwards, whatever it left running)."""
    env = environment()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        [shutil.which("bash") or "/bin/bash", "-c", text],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_LIMIT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the page left running (nothing, when it passes)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_every_example_of_the_operations_page_runs(store_url: str, tmp_path: Path) -> None:
    """The page's commands all run, with the outputs and exit codes it describes."""
    done = run_page(store_url, tmp_path)
    assert 0 == done.returncode, done.stdout + done.stderr
    out = done.stdout
    assert "A-1 waiting at manual_approval (task A-1.2)" in out
    assert "orch: error: task A-1.2: user 'bob' (groups: none) may not complete it" in done.stderr
    assert out.count("refused, exit code 1") == 4  # complete by bob, signal, retry, migrate
    assert "completed task A-1.2 (manual_approval of A-1) as manager" in out
    assert "status_changed - completed" in out
    assert "A-2 completed" in out
    assert "A-3 failed, exit code 1" in out
    assert "A-4 is cancelled" in out
    assert "OrderProcess does not wait for PaymentConfirmed" in done.stderr
    assert "ok  OrderProcess v1" in out
    assert (tmp_path / "order.mmd").read_text().startswith("stateDiagram-v2")
    assert (tmp_path / "a1.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "orders.db").exists()  # the page ran on the test's store


README = ROOT / "README.md"


def test_the_readme_command_line_example_runs(store_url: str, tmp_path: Path) -> None:
    """The README's "From the command line" block runs as written (its worker stopped after it)."""
    text = README.read_text()
    section = text[text.index("### From the command line") :]
    match = BLOCK.search(section)
    assert match is not None
    block = match.group(1)
    assert STORE_LINE in block
    body = block.replace(STORE_LINE, f"export ORCH_STORE='{store_url}'")
    done = run_script(f"set -eu\n{body}\nkill %1\nwait %1 || true\n", tmp_path)
    out, err = done.stdout, done.stderr
    assert 0 == done.returncode, out + err
    assert "A-1 waiting at manual_approval (task A-1.2)" in out
    assert "completed task A-1.2 (manual_approval of A-1) as manager" in out
    assert "status_changed - completed" in out
    assert (tmp_path / "a1.png").read_bytes().startswith(b"\x89PNG")
