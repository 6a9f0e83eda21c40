"""
Issue 13: a form class as HTML inputs and back (``statemachine_orch.web._forms``).

What a form object shows in its inputs is read back as that very object
(hypothesis, over every kind of field); a wrong text in one input is reported
for that field alone; optional fields left empty are ``None``; inputs are chosen
by the declared type.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import datetime as dt
import decimal

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch.web._forms import fields_of, parse, shown_values
from tests.web.flows import Decision, Priority

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40).filter(lambda t: t.strip() != "")

_MOMENTS = st.datetimes(
    min_value=dt.datetime(1900, 1, 1),  # noqa: DTZ001 - naive bounds; the values are made UTC
    max_value=dt.datetime(2200, 1, 1),  # noqa: DTZ001
).map(lambda d: d.replace(microsecond=0, tzinfo=dt.UTC))
"""Aware datetimes as a datetime input shows them: to the second, in UTC."""

decisions = st.builds(
    Decision,
    approved=st.booleans(),
    note=_TEXT,
    quantity=st.integers(-(10**20), 10**20),
    weight=st.floats(allow_nan=False, allow_infinity=False),
    price=st.one_of(
        *(st.decimals(-(10**20), 10**20, allow_nan=False, allow_infinity=False, places=p) for p in range(5))
    ),
    priority=st.sampled_from(Priority),
    deliver_on=st.dates(),
    remind_at=st.none() | _MOMENTS,
    budget=st.none() | st.integers(-(10**9), 10**9),
    tags=st.lists(_TEXT, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(decisions)
def test_what_a_form_shows_is_read_back_as_the_same_form(decision: Decision) -> None:
    """Issue 13 (property): parse(shown_values(form)) is the form, for every kind of field."""
    assert (decision, {}) == parse(Decision, shown_values(decision))


@settings(max_examples=100, deadline=None)
@given(
    decisions,
    st.sampled_from(["quantity", "weight", "price", "priority", "deliver_on", "remind_at", "budget", "tags"]),
    st.sampled_from(["x", "1.2.3", "NaN", "inf", "[", "12:00", "1e999999"]),
)
def test_a_wrong_text_is_reported_for_its_field_alone(decision: Decision, field: str, text: str) -> None:
    """Issue 13 (property): a text that is no value of the field's type gives that field's error and no form."""
    posted = {**shown_values(decision), field: text}
    form, errors = parse(Decision, posted)
    if (field, text) == ("price", "1e999999"):
        assert (decimal.Decimal("1e999999"), {}) == (getattr(form, "price", None), errors)  # a finite decimal
        return
    assert (None, [field]) == (form, list(errors))


@attrs.frozen
class Optional:
    """Optional fields of each kind, and defaults."""

    flag: bool | None = None
    level: Priority | None = None
    when: dt.date | None = None
    amount: decimal.Decimal | None = None
    text: str = "hello"
    count: int = 7


def test_optional_fields_left_empty_are_none_and_defaults_are_shown() -> None:
    """Issue 13: an optional bool is a yes/no/empty choice, an optional enum has an empty choice; defaults fill inputs."""
    fields = {f.name: f for f in fields_of(Optional)}
    assert (("", "—"), ("true", "yes"), ("false", "no")) == fields["flag"].choices
    assert ("", "low", "high") == tuple(v for v, _ in fields["level"].choices)
    assert ("select", "select", "date", "decimal") == tuple(fields[n].kind for n in ("flag", "level", "when", "amount"))
    assert ("hello", "7", False) == (fields["text"].value, fields["count"].value, fields["count"].required)
    empty = {"flag": "", "level": "", "when": "", "amount": "", "text": "", "count": ""}
    assert (Optional(text=""), {}) == parse(Optional, empty)
    assert (Optional(flag=False, level=Priority.LOW, amount=decimal.Decimal("0.10")), {}) == parse(
        Optional, {"flag": "false", "level": "low", "amount": "0.10", "text": "hello", "count": "7"}
    )
    assert {"flag": "'maybe' is not yes or no"} == parse(Optional, {"flag": "maybe"})[1]


def test_a_class_that_refuses_its_values_is_reported_for_the_whole_form() -> None:
    """Issue 13: an attrs validator's refusal is the form's error (key ""), with nothing built."""

    @attrs.frozen
    class Positive:
        n: int = attrs.field(validator=attrs.validators.gt(0))

    form, errors = parse(Positive, {"n": "-1"})
    assert form is None
    assert [""] == list(errors)
    assert "Positive refused these values" in errors[""]
