"""Workflows drawn by the diagram tests (issue 12, "Diagrams a person opens")."""

from __future__ import annotations

from datetime import timedelta

from statemachine_orch import Ctx, NonRetryableError, Workflow, after, human_task, step


class DgDeclinedError(Exception):
    """The card was declined."""


class DgShipment(Workflow, version="1"):
    """Reserve, approve large orders, charge, ship; undo the reservation and the charge on failure."""

    amount: float
    express: bool = False
    fragile: bool = False
    truck_ok: bool = True
    card_ok: bool = True
    refund_ok: bool = True
    approved: bool = False

    def needs_review(self) -> bool:
        return self.amount > 100_000

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        pass

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        pass

    @after(reserve, when=needs_review)
    @step
    def review(self, ctx: Ctx) -> None:
        pass

    # Two lambdas on one step: each edge is labelled by its own source.
    @after(reserve, when=lambda wf: wf.amount > 1000)
    @after(review, when=lambda wf: wf.express and not wf.fragile)
    @human_task(assignee="manager")
    def approve(self, ctx: Ctx) -> None:
        self.approved = True

    @after(reserve)
    @after(review)
    @after(approve, timeout=timedelta(seconds=60))
    @after(approve)
    @step
    def charge(self, ctx: Ctx) -> None:
        if not self.card_ok:
            raise DgDeclinedError("card declined")

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        if not self.refund_ok:
            raise NonRetryableError("the bank refused the refund")

    @after(charge, on_error=DgDeclinedError)
    @step(final=True)
    def notify_declined(self, ctx: Ctx) -> None:
        pass

    @after(charge)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        if not self.truck_ok:
            raise NonRetryableError("the truck broke down")


class DgNegations(Workflow, version="1"):
    """Guards whose negations the path listing prints."""

    ok: bool = False
    a: bool = False
    b: bool = False

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        pass

    @after(start, when=lambda wf: not wf.ok)
    @step
    def plain(self, ctx: Ctx) -> None:
        pass

    @after(start)
    @step
    def compound(self, ctx: Ctx) -> None:
        pass

    @after(compound, when=lambda wf: wf.a and wf.b)
    @step(final=True)
    def both(self, ctx: Ctx) -> None:
        pass

    @after(plain)
    @after(compound)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        pass


class DgQuoted(Workflow, version="1"):
    """A guard whose source has quotes, a backslash and something like an HTML tag."""

    note: str = ""

    @step(initial=True)
    def first(self, ctx: Ctx) -> None:
        pass

    @after(first, when=lambda wf: wf.note == 'say "hi" \\ bye <b>')
    @step(final=True)
    def second(self, ctx: Ctx) -> None:
        pass

    @after(first)
    @step(final=True)
    def third(self, ctx: Ctx) -> None:
        pass
