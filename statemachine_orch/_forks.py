"""
Forks and joins: which join collects which fork, and the steps of each branch.

A branch (region) of a fork is every step reachable from the fork's edge without
passing the join. A fork's join is the step that every branch reaches while the
branches stay disjoint; nested forks and joins fall out of the same rule, since an
outer join seen from an inner fork makes the inner branches overlap.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._spec import EdgeSpec, ForkSpec, RegionSpec, WorkflowSpec

Found = tuple[str | None, str, str]


def analyse_forks(spec: WorkflowSpec) -> tuple[tuple[ForkSpec, ...], list[Found]]:
    """The forks of *spec* with their joins and branches, and every problem with them."""
    problems: list[Found] = []
    joins: dict[str, list[str]] = {}
    for e in spec.edges:
        if e.join:
            joins.setdefault(e.dest, []).append(e.source)
    matched: dict[str, tuple[str, list[tuple[EdgeSpec, set[str]]]]] = {}
    for s in spec.steps:
        if not s.fork:
            continue
        edges = [e for e in spec.outgoing(s.name) if e.is_completion]
        if len(edges) < 2:  # noqa: PLR2004 - a fork needs two branches
            msg = (
                f"is fork=True but has {len(edges)} outgoing edge(s); a fork starts two or more "
                "parallel branches: add edges, or drop fork=True"
            )
            problems.append((s.name, "fork-one-edge", msg))
            continue
        found = _match_join(spec, s.name, edges, joins)
        if isinstance(found, str):
            problems.append((s.name, "fork-without-join", found))
        else:
            matched[s.name] = found
    by_join: dict[str, list[str]] = {}
    for fork, (join, _) in matched.items():
        by_join.setdefault(join, []).append(fork)
    for join, sources in joins.items():
        forks = by_join.get(join, [])
        names = ", ".join(sources)
        if not forks:
            msg = (
                f"@after({names}) with several sources is a join, but no step with fork=True splits "
                "into branches that all end there; for 'after any of them', stack one @after per source"
            )
            problems.append((join, "join-without-fork", msg))
        elif len(forks) > 1:
            msg = f"@after({names}) joins the branches of several forks ({', '.join(forks)}); a join closes one fork"
            problems.append((join, "join-of-several-forks", msg))
    out: list[ForkSpec] = []
    order = {s.name: i for i, s in enumerate(spec.steps)}
    for fork, (join, regions) in matched.items():
        if len(by_join.get(join, [])) > 1:
            continue
        problems += _branch_problems(spec, fork, join, regions, joins.get(join, []))
        region_specs = tuple(
            RegionSpec(
                name=edge.dest,
                edge=edge,
                steps=tuple(sorted(steps, key=order.__getitem__)),
                ends=tuple(sorted((n for n in steps if _reaches(spec, {n}, join)), key=order.__getitem__)),
            )
            for edge, steps in regions
        )
        out.append(ForkSpec(step=fork, join=join, regions=region_specs))
    return _with_parents(out), problems


def _branch(spec: WorkflowSpec, start: str, join: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for e in spec.outgoing(todo.pop()):
            if e.dest != join and e.dest not in seen:
                seen.add(e.dest)
                todo.append(e.dest)
    return seen


def _reaches(spec: WorkflowSpec, steps: set[str], join: str) -> bool:
    return any(e.dest == join for n in steps for e in spec.outgoing(n))


def _match_join(
    spec: WorkflowSpec, fork: str, edges: list[EdgeSpec], joins: dict[str, list[str]]
) -> tuple[str, list[tuple[EdgeSpec, set[str]]]] | str:
    """The join of *fork* and its branches, or why there is none."""
    best: tuple[int, str, list[str]] | None = None
    for join in joins:
        regions = [(e, _branch(spec, e.dest, join)) for e in edges]
        stranded = [e.dest for e, steps in regions if not _reaches(spec, steps, join)]
        union = {n for _, steps in regions for n in steps}
        disjoint = sum(len(steps) for _, steps in regions) == len(union)
        inside = any(fork in steps for _, steps in regions)
        if not stranded and disjoint and not inside:
            return join, regions
        if not inside and (best is None or len(stranded) < best[0]):
            best = (len(stranded), join, stranded)
    if best is None:
        return (
            "is fork=True but no join collects its branches; end them at one step with "
            "@after(last_of_branch_1, last_of_branch_2, ...)"
        )
    _, join, stranded = best
    if stranded:
        names = ", ".join(stranded)
        return f"the branch(es) starting at {names} can never reach the join {join}; route each branch to the join"
    return (
        f"its branches meet before the join {join} (a step is in two branches); each branch must keep to "
        "its own steps until the join"
    )


def _branch_problems(
    spec: WorkflowSpec, fork: str, join: str, regions: list[tuple[EdgeSpec, set[str]]], sources: list[str]
) -> Iterator[Found]:
    every = {n for _, steps in regions for n in steps}
    for src in sources:
        if src not in every:
            msg = f"joins {src}, which is not in a branch of the fork {fork}; a join's sources end branches of one fork"
            yield join, "join-sources-not-one-fork", msg
    for edge, steps in regions:
        for name in sorted(steps):
            if spec.step(name).final:
                msg = (
                    f"is final=True inside the branch {edge.dest} of the fork {fork}; a branch ends at the join {join}"
                )
                yield name, "final-in-branch", msg
        for e in spec.edges:
            if e.dest in steps and e.source not in steps and not (e.source == fork and e.dest == edge.dest):
                msg = (
                    f"is entered from {e.source}, outside the branch {edge.dest} of the fork {fork}; "
                    "a branch is entered only through its fork"
                )
                yield e.dest, "edge-into-branch", msg


def _with_parents(forks: list[ForkSpec]) -> tuple[ForkSpec, ...]:
    out: list[ForkSpec] = []
    for f in forks:
        holders = [(g, r) for g in forks if g is not f for r in g.regions if f.step in r.steps]
        if holders:
            # The innermost holder is the one with the fewest steps in the branch.
            g, r = min(holders, key=lambda h: len(h[1].steps))
            out.append(ForkSpec(step=f.step, join=f.join, regions=f.regions, parent=(g.step, r.name)))
        else:
            out.append(f)
    return tuple(out)
