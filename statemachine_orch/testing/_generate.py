"""
Generated workflow classes of any size, for benchmarks and for the tests of the toolkit itself.

The class is written as Python source and executed with the source registered in
``linecache``, so it is an ordinary workflow in every respect: ``inspect`` finds
its methods' source, and ``paths()`` analyses them like hand-written ones.
"""

from __future__ import annotations

import itertools
import linecache
import sys
import types
from typing import Any

_counter = itertools.count(1)


def generated_source(
    name: str = "Generated",
    *,
    steps: int = 50,
    branches: int = 10,
    compensate_every: int = 5,
    human_task: bool = True,
    loop: bool = True,
) -> str:
    """
    The source of a chain of *steps* steps with *branches* guarded shortcuts.

    Step ``s<i>`` at a branch point has a guarded edge (``flag_<k>``, an input) that
    skips the next step, and the default edge to it. Every *compensate_every*-th
    step has a compensation; one step is a human task (form ``Review``, assignee
    ``reviewer``, group ``reviewers``); the last steps form a loop taken once.

    Raises:
        ValueError: The steps cannot hold that many branches.
    """
    if branches * 3 + 6 > steps:
        msg = f"{steps} steps cannot hold {branches} branches (each needs 3 steps, plus 6 others)"
        raise ValueError(msg)
    branch_at = {2 + i * 3 * (steps - 6) // (3 * max(branches, 1)): i for i in range(branches)}
    points = sorted(branch_at)
    human_at = steps - 5 if human_task else -1
    loop_from, loop_to = (steps - 2, steps - 3) if loop else (-1, -1)
    lines = [
        "import attrs",
        "from statemachine_orch import Ctx, Retry, Workflow, after, goto, human_task, step",
        "",
        "",
        "@attrs.frozen",
        "class Review:",
        "    ok: bool",
        "    note: str = ''",
        "",
        "",
        f"class {name}(Workflow, version='1'):",
    ]
    lines += [f"    flag_{k}: bool" for k in range(branches)]
    lines += [
        "    visited: int = 0",
        "    undone: int = 0",
        "    rounds: int = 0",
        "    reviewed: bool = False",
        "",
    ]
    skip_into = {p + 2: p for p in points}
    for i in range(steps):
        decorators: list[str] = []
        if i > 0:
            decorators.append(f"    @after(s{i - 1})")
        if i in skip_into:
            p = skip_into[i]
            decorators.insert(0, f"    @after(s{p}, when=lambda wf: wf.flag_{branch_at[p]})")
        if i == loop_from:
            decorators.insert(0, f"    @goto(s{loop_to}, when=lambda wf: wf.rounds < 2)")
        final = i == steps - 1
        if i == human_at:
            decorators.append(
                "    @human_task(assignee='reviewer', candidate_groups=('reviewers',), form=Review"
                + (", final=True" if final else "")
                + ")"
            )
            body = [f"    def s{i}(self, ctx: Ctx, form: Review) -> None:", "        self.reviewed = form.ok"]
        else:
            options: list[str] = []
            if i == 0:
                options.append("initial=True")
            if final:
                options.append("final=True")
            if i % 3 == 1:
                options.append("retry=Retry(attempts=3, initial=0.01)")
            decorators.append(f"    @step({', '.join(options)})" if options else "    @step")
            body = [f"    def s{i}(self, ctx: Ctx) -> None:", "        self.visited += 1"]
            if i == loop_from:
                body.append("        self.rounds += 1")
        lines += decorators + body + [""]
        if compensate_every and i % compensate_every == compensate_every - 1 and i != human_at:
            lines += [
                f"    @s{i}.compensation",
                f"    def undo_s{i}(self, ctx: Ctx) -> None:",
                "        self.undone += 1",
                "",
            ]
    return "\n".join(lines) + "\n"


def generated_workflow(name: str = "Generated", **options: Any) -> type[Any]:
    """
    Build the class whose source :func:`generated_source` writes (same options).

    Returns:
        The compiled workflow class, in a module of its own.
    """
    source = generated_source(name, **options)
    module_name = f"statemachine_orch_generated_{next(_counter)}"
    filename = f"<{module_name}>"
    lines = source.splitlines(keepends=True)
    # inspect.getsource reads through linecache; an entry without mtime is never evicted.
    linecache.cache[filename] = (len(source), None, lines, filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated source
    cls: type[Any] = module.__dict__[name]
    return cls
