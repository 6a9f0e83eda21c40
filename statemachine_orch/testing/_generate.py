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


def forked_source(name: str = "GeneratedForks", *, forks: int = 3, width: int = 3, nested: bool = True) -> str:
    """
    The source of a chain of *forks* forks, each with *width* branches, joined before the next.

    In each fork, branch 0 is a chain of two steps with a compensation and an
    exclusive choice (``flag_<k>``) in its middle, branch 1 a human task (form
    ``Review``), branch 2 an inclusive one (guarded by ``extra_<k>``) and the
    others plain steps; with *nested*, branch 0 of the first fork holds a fork of
    its own. Every step is a sync no-op apart from counting.
    """
    lines = [
        "import attrs",
        "from statemachine_orch import Ctx, Retry, Workflow, after, human_task, step",
        "",
        "",
        "@attrs.frozen",
        "class Review:",
        "    ok: bool",
        "",
        "",
        f"class {name}(Workflow, version='1'):",
    ]
    lines += [f"    flag_{k}: bool" for k in range(forks)]
    lines += [f"    extra_{k}: bool" for k in range(forks)]
    lines += ["    visited: int = 0", "    undone: int = 0", ""]

    def plain(name: str, after: list[str], options: str = "") -> None:
        lines.extend(f"    @after({a})" for a in after)
        lines.append(f"    @step({options})" if options else "    @step")
        lines.extend([f"    def {name}(self, ctx: Ctx) -> None:", "        self.visited += 1", ""])

    def undo(name: str) -> None:
        lines.extend(
            [
                f"    @{name}.compensation",
                f"    def undo_{name}(self, ctx: Ctx) -> None:",
                "        self.undone += 1",
                "",
            ]
        )

    plain("start", [], "initial=True")
    before = "start"
    for k in range(forks):
        fork = f"f{k}"
        plain(fork, [before], "fork=True")
        ends: list[str] = []
        for j in range(width):
            first = f"f{k}b{j}"
            if j == 0:
                plain(first, [fork], "retry=Retry(attempts=2, initial=0.01)")
                undo(first)
                tail = first
                if nested and k == 0:
                    plain(f"{first}n", [first], "fork=True")
                    plain(f"{first}n0", [f"{first}n"])
                    undo(f"{first}n0")
                    plain(f"{first}n1", [f"{first}n"])
                    plain(f"{first}nj", [f"{first}n0, {first}n1"])
                    tail = f"{first}nj"
                plain(f"{first}x", [f"{tail}, when=lambda wf: wf.flag_{k}"])
                plain(f"{first}y", [f"{first}x", tail])
                ends.append(f"{first}y")
            elif j == 1:
                lines += [
                    f"    @after({fork})",
                    "    @human_task(assignee='reviewer', form=Review)",
                    f"    def {first}(self, ctx: Ctx, form: Review) -> None:",
                    "        self.visited += 1",
                    "",
                ]
                ends.append(first)
            elif j == 2:  # noqa: PLR2004 - the third branch is the inclusive one
                plain(first, [f"{fork}, when=lambda wf: wf.extra_{k}"])
                undo(first)
                ends.append(first)
            else:
                plain(first, [fork])
                ends.append(first)
        before = f"j{k}"
        plain(before, [", ".join(ends)])
    plain("finish", [before], "final=True")
    return "\n".join(lines) + "\n"


def generated_workflow(name: str = "Generated", *, forked: bool = False, **options: Any) -> type[Any]:
    """
    Build the class whose source :func:`generated_source` writes (same options).

    With *forked*, :func:`forked_source` writes it instead (its options).

    Returns:
        The compiled workflow class, in a module of its own.
    """
    source = forked_source(name, **options) if forked else generated_source(name, **options)
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
