"""
Not caught yet: ``timeout=`` on a sync step type-checks, but class creation rejects it.

Only an ``async`` step can be interrupted, so ``@step(timeout=...)`` on a plain ``def``
raises ``WorkflowDefinitionError`` (rule ``timeout-needs-async``) when the class
statement runs. The typing could say so: give ``step`` an overload for the keyword form
with a ``timeout``, whose decorator only accepts ``Callable[[W, Ctx], Awaitable[None]]``::

    @overload
    def step(*, initial: bool = False, final: bool = False, retry: Retry | None = None,
             timeout: timedelta | float) -> Callable[[Callable[[W, Ctx], Awaitable[None]]],
                                                     Step[W, [Ctx], Awaitable[None]]]: ...
    @overload
    def step(*, initial: bool = False, final: bool = False, retry: Retry | None = None,
             timeout: None = None) -> Callable[[Callable[[W, Ctx], R2]], Step[W, [Ctx], R2]]: ...
"""

from __future__ import annotations

from datetime import timedelta

from statemachine_orch import Ctx, Workflow, step


def define() -> type[Workflow]:
    class SyncWithTimeout(Workflow):
        done: bool = False

        @step(initial=True, final=True, timeout=timedelta(seconds=5))  # not caught: a sync method
        def work(self, ctx: Ctx) -> None:
            self.done = True

    return SyncWithTimeout
