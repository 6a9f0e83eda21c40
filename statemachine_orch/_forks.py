"""
Forks and joins: which join collects which fork, and the steps of each branch.

A branch (region) of a fork is every step reachable from the fork's edge without
passing the join (or coming back to the fork). A fork's join is the step that
every branch reaches while the branches stay disjoint; nested forks and joins fall
out of the same rule, since an outer join seen from an inner fork makes the inner
branches overlap.

When no join fits, the candidate that comes closest is blamed, so that the
message names the join the author most likely meant (and that join is not also
reported as a join without a fork).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs

from ._spec import EdgeSpec, ForkSpec, RegionSpec, WorkflowSpec

Found = tuple[str | None, str, str]
Regions = list[tuple[EdgeSpec, set[str]]]


@attrs.frozen
class _Miss:
    """Why a join does not collect a fork's branches, and how bad a fit it is (lower is closer)."""

    join: str | None
    rank: tuple[int, int, int]
    message: str


def analyse_forks(spec: WorkflowSpec) -> tuple[tuple[ForkSpec, ...], list[Found]]:
    """The forks of *spec* with their joins and branches, and every problem with them."""
    problems: list[Found] = []
    joins: dict[str, list[str]] = {}
    for e in spec.edges:
        if e.join and e.source not in joins.setdefault(e.dest, []):
            joins[e.dest].append(e.source)
    matched: dict[str, tuple[str, Regions]] = {}
    blamed: set[str] = set()
    for s in spec.steps:
        if not s.fork:
            continue
        edges = [e for e in spec.outgoing(s.name) if e.is_completion]
        if len(edges) < 2:  # noqa: PLR2004 - a fork needs two branches
            problems.append((s.name, "fork-one-edge", _one_edge(s.name, edges)))
            continue
        found = _match_join(spec, s.name, edges, joins)
        if isinstance(found, _Miss):
            problems.append((s.name, "fork-without-join", found.message))
            if found.join is not None:
                blamed.add(found.join)
        else:
            matched[s.name] = found
    by_join: dict[str, list[str]] = {}
    for fork, (join, _) in matched.items():
        by_join.setdefault(join, []).append(fork)
    for join, sources in joins.items():
        forks = by_join.get(join, [])
        names = ", ".join(sources)
        if not forks and join not in blamed:
            msg = (
                f"@after({names}) with several sources is a join, but no step with fork=True splits "
                "into branches that all end there; for 'after any of them', stack one @after per source"
            )
            problems.append((join, "join-without-fork", msg))
        elif len(forks) > 1:
            msg = (
                f"@after({names}) joins the branches of several forks ({', '.join(forks)}); a join closes "
                "one fork: give each fork a join of its own"
            )
            problems.append((join, "join-of-several-forks", msg))
    out: list[ForkSpec] = []
    order = {s.name: i for i, s in enumerate(spec.steps)}
    for fork, (join, regions) in matched.items():
        if len(by_join[join]) > 1:
            continue
        problems += _foreign_sources(fork, join, regions, joins[join])
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
    with_parents = _with_parents(out)
    problems += _finals_in_branches(spec, with_parents)
    problems += _edges_into_branches(spec, with_parents)
    return with_parents, problems


def _one_edge(fork: str, edges: Sequence[EdgeSpec]) -> str:
    if not edges:
        return (
            "is fork=True but has no outgoing edge; a fork starts two or more parallel branches: "
            f"add @after({fork}) to the first step of each branch, or drop fork=True"
        )
    return (
        f"is fork=True but has 1 outgoing edge (to {edges[0].dest}); a fork starts two or more parallel "
        f"branches: add @after({fork}) to the first step of each branch, or drop fork=True"
    )


def _branch(spec: WorkflowSpec, start: str, fork: str, join: str) -> set[str]:
    """The steps reachable from *start* without passing *join* or coming back to *fork*."""
    seen = {start}
    todo = [start]
    while todo:
        for e in spec.outgoing(todo.pop()):
            if e.dest not in (join, fork) and e.dest not in seen:
                seen.add(e.dest)
                todo.append(e.dest)
    return seen


def _reaches(spec: WorkflowSpec, steps: set[str], target: str) -> bool:
    return any(e.dest == target for n in steps for e in spec.outgoing(n))


def _match_join(
    spec: WorkflowSpec, fork: str, edges: list[EdgeSpec], joins: dict[str, list[str]]
) -> tuple[str, Regions] | _Miss:
    """The join of *fork* and its branches, or why there is none (with the join it comes closest to)."""
    order = {s.name: i for i, s in enumerate(spec.steps)}
    misses: list[_Miss] = []
    for join in joins:
        straight = [e for e in edges if e.dest == join]
        if straight:
            msg = (
                f"its edge to {join} goes straight to the join, a branch without steps; "
                "put a step on that branch, or drop the edge"
            )
            misses.append(_Miss(join, (0, 0, 0), msg))
            continue
        regions = [(e, _branch(spec, e.dest, fork, join)) for e in edges]
        union = {n for _, steps in regions for n in steps}
        looped = [e.dest for e, steps in regions if _reaches(spec, steps, fork)]
        stranded = [e.dest for e, steps in regions if not _reaches(spec, steps, join)]
        shared = sorted(
            (n for n in union if sum(n in steps for _, steps in regions) > 1),
            key=order.__getitem__,
        )
        if not looped and not stranded and not shared:
            return join, regions
        if looped:
            which = _plural(looped, "the branch starting at", "the branches starting at")
            verb = "leads" if len(looped) == 1 else "lead"
            msg = (
                f"{which} {verb} back to the fork {fork}; a branch may loop within itself, "
                f"but leaves only through the join {join}"
            )
            misses.append(_Miss(join, (1, 0, len(union)), msg))
        elif len(stranded) == len(regions):
            continue  # no branch ends at this join: it belongs to something else
        elif stranded:
            which = _plural(stranded, "the branch starting at", "the branches starting at")
            msg = f"{which} can never reach the join {join}; route every branch of the fork to its join"
            misses.append(_Miss(join, (3, len(stranded), len(union)), msg))
        else:
            meeting = [e.dest for e, steps in regions if shared[0] in steps]
            msg = (
                f"its branches starting at {', '.join(meeting)} meet at {shared[0]} before the join {join}; "
                "each branch must keep to its own steps until the join"
            )
            misses.append(_Miss(join, (2, 0, len(union)), msg))
    if misses:
        return min(misses, key=lambda m: m.rank)
    starts = ", ".join(e.dest for e in edges)
    msg = (
        f"is fork=True but no join collects its branches (starting at {starts}); end them at one step "
        "with @after(last_of_branch_1, last_of_branch_2, ...)"
    )
    return _Miss(None, (4, 0, 0), msg)


def _plural(names: list[str], one: str, several: str) -> str:
    return f"{one} {names[0]}" if len(names) == 1 else f"{several} {', '.join(names)}"


def _foreign_sources(fork: str, join: str, regions: Regions, sources: list[str]) -> Iterator[Found]:
    every = {n for _, steps in regions for n in steps}
    for src in sources:
        if src not in every:
            msg = (
                f"@after({', '.join(sources)}) joins {src}, which is not in a branch of the fork {fork}; "
                "a join's sources are the last steps of the branches of one fork"
            )
            yield join, "join-sources-not-one-fork", msg


def _innermost(forks: tuple[ForkSpec, ...], name: str) -> list[tuple[ForkSpec, RegionSpec]]:
    """The branches holding step *name*, innermost first."""
    held = [(f, r) for f in forks for r in f.regions if name in r.steps]
    return sorted(held, key=lambda h: len(h[1].steps))


def _finals_in_branches(spec: WorkflowSpec, forks: tuple[ForkSpec, ...]) -> Iterator[Found]:
    for s in spec.steps:
        held = _innermost(forks, s.name)
        if s.final and held:
            f, r = held[0]
            msg = (
                f"is final=True inside the branch {r.name} of the fork {f.step}; a branch cannot end the "
                f"instance: it ends at the join {f.join}"
            )
            yield s.name, "final-in-branch", msg


def _edges_into_branches(spec: WorkflowSpec, forks: tuple[ForkSpec, ...]) -> Iterator[Found]:
    # One problem per edge, about the innermost branch it enters from outside.
    for e in spec.edges:
        for f, r in _innermost(forks, e.dest):
            if e.source not in r.steps and not (e.source == f.step and e.dest == r.name and e.is_completion):
                msg = (
                    f"is entered from {e.source}, outside the branch {r.name} of the fork {f.step}; "
                    "a branch is entered only through its fork"
                )
                yield e.dest, "edge-into-branch", msg
                break


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
