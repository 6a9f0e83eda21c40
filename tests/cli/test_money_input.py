"""
Issue 10: money and time from the command line.

``-i amount=12.50`` gives a ``Decimal`` field the text ``12.50`` (not the float
12.5, which would lose the trailing zero), ``-i note=007`` a ``str`` field the
text ``007``; the JSON of ``--input-json`` and ``signal --json`` carries
them as strings. What does not fit is still refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.cli.conftest import Result

Invoke = Callable[..., Result]
INVOICE = "tests.cli.money_flows:Invoice"
REF = "12345678-1234-5678-1234-567812345678"


def test_text_typed_fields_take_the_text_given(invoke: Invoke, sqlite_url: str) -> None:
    """Issue 10: Decimal, UUID, datetime, timedelta and str fields keep what -i gives them as text, digit for digit."""
    started = invoke(
        "run", INVOICE, "--store", sqlite_url, "--here", "--id", "INV-1", "--json",
        "-i", "amount=12.50",
        "-i", f"reference={REF}",
        "-i", "due=2026-04-01T09:00:00+02:00[Europe/Paris]",
        "-i", "terms=P45D",
        "-i", "note=007",
        "-i", "discount=null",
    )  # fmt: skip
    assert 0 == started.code, started.err
    shown = invoke("show", "INV-1", "--store", sqlite_url, "--json").json()
    assert {
        "amount": "12.50",
        "reference": REF,
        "due": "2026-04-01T09:00:00+02:00[Europe/Paris]",
        "terms": "P45D",
        "note": "007",
        "discount": None,
        "paid": None,
    } == shown["variables"]


def test_json_input_and_messages_carry_money_as_strings(invoke: Invoke, sqlite_url: str) -> None:
    """Issue 10: --input-json and a signal's JSON give Decimals and dates as their JSON text; a bad one names the field."""
    given = f'{{"amount": "99.90", "reference": "{REF}", "due": "2026-04-01T00:00:00+00:00"}}'
    started = invoke("run", INVOICE, "--store", sqlite_url, "--here", "--id", "INV-2", "--input-json", given)
    assert 0 == started.code, started.err
    paid = invoke(
        "signal", "INV-2", "Payment", "--json", '{"amount": "99.90", "paid_on": "2026-04-02"}',
        "--store", sqlite_url, "-m", "tests.cli.money_flows",
    )  # fmt: skip
    assert 0 == paid.code, paid.err
    as_float = invoke(
        "signal", "INV-2", "Payment", "--json", '{"amount": 99.9, "paid_on": "2026-04-02"}',
        "--store", sqlite_url, "-m", "tests.cli.money_flows",
    )  # fmt: skip
    assert 1 == as_float.code
    assert "Payment.amount: expected Decimal but got 99.9 (type=float)" in as_float.err
    bad = invoke(
        "run",
        INVOICE,
        "--store",
        sqlite_url,
        "--here",
        "-i",
        "amount=lots",
        "-i",
        f"reference={REF}",
        "-i",
        "due=2026-04-01",
    )
    assert 1 == bad.code
    assert "Invoice.amount" in bad.err
    assert "'lots'" in bad.err
