"""``python -m statemachine_orch``: the ``orch`` command line."""

from __future__ import annotations

from statemachine_orch.cli import main

main()
