"""
Every code block of README.md runs, or is checked against the tested file it comes from (issue 10).

A new user pastes the README's code: the five-minute tour must run as pasted (it
defines its service and calls ``main()``), its Mermaid diagram must be the one
``mermaid()`` draws for it, a block marked ``<!-- excerpt of PATH -->`` must be
made of lines of that file in the same order (the file itself is tested
elsewhere), the trip booking's printed history must be what the example prints,
and the shell blocks must name real ``make`` targets and ``orch`` commands. A
block no rule here covers fails :func:`test_every_block_is_covered`.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from statemachine_orch import mermaid

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(
    r"^(?:<!-- excerpt of (?P<source>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL
)
_HEADING = re.compile(r"^#{2,3} (.+)$", re.MULTILINE)


@attrs.frozen
class Block:
    """A fenced code block of the README, under its nearest heading."""

    heading: str
    lang: str
    body: str
    source: str | None

    @property
    def key(self) -> tuple[str, str]:
        """Which rule covers it: its heading and its language (``excerpt`` for excerpts)."""
        return (self.heading, "excerpt" if self.source else self.lang)


def blocks() -> list[Block]:
    """The README's code blocks, in order."""
    text = README.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    found: list[Block] = []
    for m in _FENCE.finditer(text):
        heading = [title for at, title in headings if at < m.start()][-1]
        found.append(Block(heading, m.group("lang"), m.group("body"), m.group("source")))
    return found


def block(heading: str, lang: str) -> Block:
    """The one block of *lang* under *heading*."""
    [found] = [b for b in blocks() if b.key == (heading, lang)]
    return found


COVERED = {
    ("Two commands", "sh"): "test_the_shell_blocks_name_real_targets_and_commands",
    ("From the command line", "sh"): "tests/cli/test_operations_doc.py::test_the_readme_command_line_example_runs",
    ("A five-minute tour", "python"): "test_the_tour_runs_as_pasted",
    ("A five-minute tour", "mermaid"): "test_the_tour_diagram_is_the_one_mermaid_draws",
    ("Parallel branches: the trip booking", "sh"): "test_the_shell_blocks_name_real_targets_and_commands",
    ("Parallel branches: the trip booking", "excerpt"): "test_an_excerpt_is_made_of_its_files_lines",
    ("Parallel branches: the trip booking", "text"): "test_the_trip_history_is_what_the_example_prints",
    ("Child workflows", "excerpt"): "test_an_excerpt_is_made_of_its_files_lines",
    ("Many workers, one database", "excerpt"): "test_an_excerpt_is_made_of_its_files_lines",
    ("Task list on the web", "sh"): "test_the_shell_blocks_name_real_targets_and_commands",
}
"""How each block is tested, by (heading, language)."""


def test_every_block_is_covered() -> None:
    """Issue 10: no README code block goes untested; a new one needs a rule in COVERED."""
    keys = [b.key for b in blocks()]
    assert len(keys) == len(set(keys)), "two blocks of one language under one heading: give one a heading"
    missing = sorted(set(keys) - set(COVERED))
    assert not missing, f"README blocks no test covers (add a rule to COVERED in {Path(__file__).name}): {missing}"
    assert sorted(COVERED) == sorted(keys), "COVERED names blocks the README no longer has"


def test_the_tour_runs_as_pasted(tmp_path: Path) -> None:
    """Issue 10: the tour, saved as a file, runs: the 5000 order waits for the manager, who approves it."""
    script = tmp_path / "tour.py"
    script.write_text(block("A five-minute tour", "python").body, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # and again, on the orders.db the first run left
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        assert "A-1: approved=True, completed" == done.stdout.strip().splitlines()[-1]
    assert (tmp_path / "orders.db").exists()


def test_the_tour_diagram_is_the_one_mermaid_draws(tmp_path: Path) -> None:
    """Issue 10: the README's Mermaid diagram is mermaid() of the tour's OrderProcess, not a drawing of an older one."""
    script = tmp_path / "tour.py"
    script.write_text(block("A five-minute tour", "python").body, encoding="utf-8")
    tour = runpy.run_path(str(script), run_name="readme_tour")
    assert block("A five-minute tour", "mermaid").body.rstrip("\n") == mermaid(tour["OrderProcess"]).rstrip("\n")


def _code_lines(text: str, *, doctest: bool) -> list[str]:
    """The lines of *text* as code: stripped, comments dropped (and ``>>>``/``...`` prompts when *doctest*)."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if doctest and (line.startswith((">>> ", "... ")) or line in {">>>", "..."}):
            line = line[4:].strip()
        line = re.sub(r"\s+#\s.*$", "", line) if not line.startswith("#") else ""
        out.append(line)
    return out


def _excerpts() -> list[Block]:
    return [b for b in blocks() if b.source is not None]


@pytest.mark.parametrize("excerpt", _excerpts(), ids=[f"{b.heading}: {b.source}" for b in _excerpts()])
def test_an_excerpt_is_made_of_its_files_lines(excerpt: Block) -> None:
    """Issue 10: each line of an excerpt is a line of its (tested) file, in order; `...` marks what is left out."""
    assert excerpt.source is not None
    source = ROOT / excerpt.source
    lines = _code_lines(source.read_text(encoding="utf-8"), doctest=source.suffix == ".md")
    at = 0
    for line in _code_lines(excerpt.body, doctest=False):
        if line in {"", "..."}:
            continue
        # `def f(...) -> None: ...` stands for the method with its body left out.
        wanted = line.removesuffix(" ...") if line.endswith(": ...") else line
        found = [i for i in range(at, len(lines)) if lines[i] == wanted or lines[i] == line]
        assert found, f"{excerpt.source} has no line {wanted!r} after line {at}"
        at = found[0] + 1


_TIME = re.compile(r"^\s+\+\s+[\d.]+ ms\s+")
_ID = re.compile(r"\s+\[[^\]]+\]$")


def _story(text: str, title: str) -> list[str]:
    """The lines of the story titled *title* (``== TRIP-002 ...``), without times and instance ids."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return [_ID.sub("", _TIME.sub("", line)).strip() for line in lines[start:end]]


def test_the_trip_history_is_what_the_example_prints() -> None:
    """Issue 10: the README's TRIP-002 history is the example's, entry for entry (the times aside)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "trip_booking.py"), "--memory"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    readme = block("Parallel branches: the trip booking", "text").body
    assert _story(readme, "TRIP-002") == _story(done.stdout, "TRIP-002")


def test_the_shell_blocks_name_real_targets_and_commands() -> None:
    """Issue 10: `make demo`, `make test` and `make trip` are Makefile targets; `orch serve --dev-login` exists."""
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))
    named = {
        word
        for key in (("Two commands", "sh"), ("Parallel branches: the trip booking", "sh"))
        for word in re.findall(r"^make (\w+)", block(*key).body, re.MULTILINE)
    }
    assert {"demo", "test", "trip"} == named
    assert named <= targets
    web = block("Task list on the web", "sh").body
    assert "orch serve examples.order_process --dev-login" in web
    # In a process of its own: the command line configures the process's logging.
    result = subprocess.run(
        [sys.executable, "-m", "statemachine_orch", "serve", "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    assert "--dev-login" in result.stdout
    operations_test = (ROOT / "tests" / "cli" / "test_operations_doc.py").read_text(encoding="utf-8")
    assert "def test_the_readme_command_line_example_runs(" in operations_test
