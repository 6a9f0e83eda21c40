"""
SIGKILL workers whose steps send messages and start instances (issue 10, item 8).

A seeded loop runs ``tests.crash.message_worker`` on a SQLite file of senders and
kills it at random moments, often while a step that already asked for its
messages dawdles before its commit (the effects file then shows the body run
again). A last worker runs everything to the end. Then the store must show,
for every sender: its inbox started once, with exactly its two messages,
consumed in order and none left over (a message written twice would be kept,
unconsumed); exactly one echo, under the id of the visit that completed; and the
sender's history noting each send once — though some bodies ran more than once.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.message_worker import WORKFLOWS
from tests.crash.procs import crash_loop

SENDERS = 24
KILLS = 8

pytestmark = pytest.mark.slow

K = EventKind


def test_each_message_and_start_happens_once_across_kills(tmp_path: Path) -> None:
    """Issue 10: kill -9 around steps that signal and start: every message kept once, every instance started once."""
    db = tmp_path / "messages.db"
    effects = tmp_path / "effects.log"
    crash_loop("tests.crash.message_worker", db, effects, seed=8, count=SENDERS, kills=KILLS, max_pause=0.6)
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry(WORKFLOWS))
        infos = {i.id: i for i in store.infos(None, None)}
        echoes = sorted(i for i, info in infos.items() if info.workflow == "MkEcho")
        leftover = {n: store.signals(f"inbox-{n}") for n in range(SENDERS)}
        got = {}
        for n in range(SENDERS):
            inbox = store.load(f"inbox-{n}")
            assert inbox is not None, n
            got[n] = inbox.wf.got
        notes = {n: Counter(e.kind for e in store.history(f"sender-{n}")) for n in range(SENDERS)}
    assert {InstanceStatus.COMPLETED} == {i.status for i in infos.values()}
    assert {n: [n, n + 1000] for n in range(SENDERS)} == got
    assert {n: [] for n in range(SENDERS)} == leftover
    assert sorted(f"sender-{n}:0.1" for n in range(SENDERS)) == echoes
    # started: the inbox (with its first message) and the echo; sent: the second message
    assert dict.fromkeys(range(SENDERS), (2, 1)) == {
        n: (c[K.STARTED_INSTANCE], c[K.SIGNAL_SENT]) for n, c in notes.items()
    }
    ran = Counter(line.split()[1] for line in effects.read_text().splitlines())
    # every third sender's first attempt failed after sending: those bodies ran at least twice
    assert all(ran[f"sender-{n}:0"] >= 2 for n in range(0, SENDERS, 3))
