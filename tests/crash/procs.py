"""Process handling shared by the crash tests: no worker is ever left running."""

from __future__ import annotations

import signal
import subprocess


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for *proc* and return its output; a worker that hangs is killed, never left behind."""
    try:
        return proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL *proc*, reap it and close its pipes."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
