"""The ``Store`` conformance suite (issue 9): one contract, run on every store."""
