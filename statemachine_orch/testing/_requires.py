"""The testing toolkit needs hypothesis (the ``testing`` extra): without it, importing it says how to install it."""

from __future__ import annotations

import importlib

try:
    importlib.import_module("hypothesis")
except ImportError as exc:
    msg = (
        "statemachine_orch.testing needs hypothesis, which is not installed; install the testing extra: "
        "pip install 'statemachine-orch[testing]'"
    )
    raise ImportError(msg, name="statemachine_orch.testing") from exc
