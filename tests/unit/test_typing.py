"""
Typing tests: pyright --strict and mypy --strict accept correct workflows and reject mistaken ones.

Issue 2 promises that a user's editor reports their mistakes in a workflow, and nothing
on a correct one (DESIGN.md §1, STYLE.md rules 8-12). So the library's typing is tested
like behaviour, both ways, on the files under ``tests/typing/``:

- ``ok/``: correct workflows and engine calls. Neither checker may report anything, and
  each file also runs, so its workflows pass the definition checks at class creation.
- ``wrong/``: one file per kind of mistake, with markers at the end of the lines that
  must fail::

      # E: <fragment>         pyright reports an error here whose message contains <fragment>
      # mypy: <fragment>      mypy reports an error here whose message contains <fragment>
      # mypy-misses: <why>    mypy is known to miss this one; it must stay silent here

  An ``# E:`` line without a mypy marker needs some mypy error as well. No other line
  may get an error: a mistake that stops being caught and a new cascade of errors both
  fail the test.
- ``wrong_not_yet/``: mistakes the library's typing lets through today (each file says
  which signature would catch it). Nothing asserts on them here; the project-wide
  pyright/mypy run checks that they type-check, so it fails once the typing catches one,
  and the file then moves to ``wrong/``.

Each checker runs once per folder per session, with a temporary configuration derived
from pyproject.toml and strict mode forced (pyproject.toml excludes ``wrong/`` from the
normal run).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import tokenize
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPING = ROOT / "tests" / "typing"
OK = TYPING / "ok"
WRONG = TYPING / "wrong"
OK_FILES = sorted(OK.glob("*.py"))
WRONG_FILES = sorted(WRONG.glob("*.py"))

CHECKER_TIMEOUT = 240
"""Seconds one checker run may take (the pytest timeout of the first test using it is 300)."""

_MARKER = re.compile(r"#\s*(E|mypy|mypy-misses):\s*(.*?)\s*(?=#\s*(?:E|mypy|mypy-misses):|$)")


@attrs.frozen
class Diagnostic:
    """One error reported by a checker."""

    file: str
    line: int
    message: str


@attrs.frozen
class Expectation:
    """What the markers on one line of a ``wrong/`` file demand."""

    line: int
    pyright: str | None = None
    mypy: str | None = None
    mypy_misses: bool = False

    def fragment(self, checker: str) -> str | None:
        """The fragment this line demands in *checker*'s message (``None``: any message)."""
        return self.pyright if checker == "pyright" else self.mypy

    def expects_error(self, checker: str) -> bool:
        """Whether *checker* must report an error on this line."""
        if checker == "pyright":
            return self.pyright is not None
        return self.mypy is not None or (self.pyright is not None and not self.mypy_misses)


def expectations(path: Path) -> dict[int, Expectation]:
    """The markers of *path*, by line; only comments count, never text inside strings."""
    found: dict[int, Expectation] = {}
    with tokenize.open(path) as source:
        for token in tokenize.generate_tokens(source.readline):
            if token.type != tokenize.COMMENT:
                continue
            markers = {m.group(1): m.group(2) for m in _MARKER.finditer(token.string)}
            if not markers:
                continue
            line = token.start[0]
            for kind, text in markers.items():
                if not text:
                    msg = f"{path.name}:{line}: the `# {kind}:` marker needs a fragment or a reason"
                    raise ValueError(msg)
            if "mypy" in markers and "mypy-misses" in markers:
                msg = f"{path.name}:{line}: `# mypy:` and `# mypy-misses:` contradict each other"
                raise ValueError(msg)
            found[line] = Expectation(line, markers.get("E"), markers.get("mypy"), mypy_misses="mypy-misses" in markers)
    return found


def _squeeze(text: str) -> str:
    # pyright indents the lines of its messages with non-breaking spaces.
    return " ".join(text.split())


def mismatches(marks: dict[int, Expectation], diagnostics: list[Diagnostic], checker: str) -> list[str]:
    """Every difference between what the markers of one file demand and what *checker* said about it."""
    by_line: defaultdict[int, list[str]] = defaultdict(list)
    for d in diagnostics:
        by_line[d.line].append(d.message)
    problems: list[str] = []
    for line, mark in sorted(marks.items()):
        if not mark.expects_error(checker):
            continue
        messages = by_line.pop(line, [])
        fragment = mark.fragment(checker)
        if not messages:
            wanted = f"an error containing {fragment!r}" if fragment else "an error"
            problems.append(f"line {line}: expected {wanted}, got none")
        elif fragment is not None and not any(_squeeze(fragment) in _squeeze(m) for m in messages):
            problems.append(f"line {line}: expected an error containing {fragment!r}, got {messages}")
    for line, messages in sorted(by_line.items()):
        silent = marks.get(line)
        if checker == "mypy" and silent is not None and silent.mypy_misses:
            problems.append(
                f"line {line}: marked `# mypy-misses` but mypy now reports {messages}; "
                "replace the marker with `# mypy: <fragment>`"
            )
        else:
            problems.append(f"line {line}: unexpected {messages}")
    return problems


# ----------------------------------------------------------------------- running the checkers


def _pyproject_tool(name: str) -> dict[str, Any]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        tool: dict[str, Any] = tomllib.load(f)["tool"][name]
    return dict(tool)


def _checked(proc: subprocess.CompletedProcess[str], checker: str) -> str:
    # Both exit 1 when they found errors; anything else means the checker itself failed.
    if proc.returncode not in {0, 1}:
        pytest.fail(f"{checker} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def run_pyright(folder: Path, workdir: Path) -> list[Diagnostic]:
    """Run pyright, strict, on the ``*.py`` files of *folder*; its errors and warnings."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in _pyproject_tool("pyright").items() if k not in {"include", "exclude"}}
    # pyright takes only paths relative to its configuration file.
    config |= {
        "include": [os.path.relpath(folder, workdir)],
        "extraPaths": [os.path.relpath(ROOT, workdir)],
        "typeCheckingMode": "strict",
    }
    (workdir / "pyrightconfig.json").write_text(json.dumps(config, indent=2))
    command = [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
    proc = subprocess.run(
        [*command, "-p", str(workdir / "pyrightconfig.json")],
        capture_output=True,
        text=True,
        timeout=CHECKER_TIMEOUT,
        cwd=ROOT,
        env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},
        check=False,
    )
    report = json.loads(_checked(proc, "pyright"))
    files = sorted(folder.glob("*.py"))
    if report["summary"]["filesAnalyzed"] != len(files):
        pytest.fail(f"pyright analysed {report['summary']['filesAnalyzed']} files, not the {len(files)} in {folder}")
    return [
        Diagnostic(Path(d["file"]).name, d["range"]["start"]["line"] + 1, d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] in {"error", "warning"}
    ]


def _ini(value: str | bool | list[str]) -> str:
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def run_mypy(folder: Path, workdir: Path) -> list[Diagnostic]:
    """Run mypy, strict, on the ``*.py`` files of *folder*; its errors."""
    workdir.mkdir(parents=True, exist_ok=True)
    tool = _pyproject_tool("mypy")
    overrides: list[dict[str, Any]] = tool.pop("overrides", [])
    for key in ("files", "exclude"):
        tool.pop(key, None)
    tool |= {"strict": True, "cache_dir": str(workdir.parent / "mypy-cache")}
    lines = ["[mypy]", *(f"{k} = {_ini(v)}" for k, v in tool.items())]
    for override in overrides:
        options = dict(override)
        modules = options.pop("module")
        lines.append(f"[mypy-{_ini(modules).replace(' ', '')}]")
        lines.extend(f"{k} = {_ini(v)}" for k, v in options.items())
    (workdir / "mypy.ini").write_text("\n".join(lines) + "\n")
    files = [str(p) for p in sorted(folder.glob("*.py"))]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(workdir / "mypy.ini"),
            "--output",
            "json",
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=CHECKER_TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    out = _checked(proc, "mypy")
    diagnostics: list[Diagnostic] = []
    for raw in out.splitlines():
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError:
            pytest.fail(f"mypy printed something that is not a JSON diagnostic: {raw!r}\n{out}\n{proc.stderr}")
        if d["severity"] == "error":
            diagnostics.append(Diagnostic(Path(d["file"]).name, d["line"], d["message"]))
    return diagnostics


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("typing")


@pytest.fixture(scope="module")
def pyright_ok(workdir: Path) -> list[Diagnostic]:
    return run_pyright(OK, workdir / "pyright-ok")


@pytest.fixture(scope="module")
def pyright_wrong(workdir: Path) -> list[Diagnostic]:
    return run_pyright(WRONG, workdir / "pyright-wrong")


@pytest.fixture(scope="module")
def mypy_ok(workdir: Path) -> list[Diagnostic]:
    return run_mypy(OK, workdir / "mypy-ok")


@pytest.fixture(scope="module")
def mypy_wrong(workdir: Path) -> list[Diagnostic]:
    return run_mypy(WRONG, workdir / "mypy-wrong")


def _of(path: Path, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.file == path.name]


def _listing(diagnostics: list[Diagnostic]) -> str:
    return "\n".join(f"{d.file}:{d.line}: {d.message}" for d in diagnostics)


def _each(paths: list[Path]) -> list[Any]:
    return [pytest.param(path, id=path.stem) for path in paths]


# ----------------------------------------------------------------------- correct code is accepted


@pytest.mark.timeout(300)
def test_pyright_accepts_correct_workflows(pyright_ok: list[Diagnostic]) -> None:
    """Issue 2: pyright --strict reports nothing on correct workflows and engine calls."""
    assert not pyright_ok, _listing(pyright_ok)


@pytest.mark.timeout(300)
def test_mypy_accepts_correct_workflows(mypy_ok: list[Diagnostic]) -> None:
    """Issue 2: mypy --strict reports nothing on correct workflows and engine calls."""
    assert not mypy_ok, _listing(mypy_ok)


@pytest.mark.parametrize("path", _each(OK_FILES))
def test_correct_workflows_also_pass_the_definition_checks(path: Path) -> None:
    """Issue 2: the positive typing examples are valid workflows at run time too (class creation checks them)."""
    namespace = runpy.run_path(str(path), run_name=f"typing_ok_{path.stem}")
    assert namespace


def test_typed_engine_calls_also_run(run: Callable[[Any], Any]) -> None:
    """Issue 2: the typed engine calls of ok/ok_engine_api.py do what their types say."""
    namespace = runpy.run_path(str(OK / "ok_engine_api.py"), run_name="typing_ok_engine_api_run")
    expected = ("a@example.org", 30, True)
    assert expected == run(namespace["run"]())


# ----------------------------------------------------------------------- mistakes are reported


def test_every_wrong_file_marks_its_mistakes() -> None:
    """Issue 2: each file of wrong/ demands at least one error, so none passes vacuously."""
    assert len(WRONG_FILES) >= 10
    unmarked = [p.name for p in WRONG_FILES if not any(e.pyright for e in expectations(p).values())]
    assert not unmarked, unmarked


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", _each(WRONG_FILES))
def test_pyright_reports_each_mistake(path: Path, pyright_wrong: list[Diagnostic]) -> None:
    """Issue 2: pyright --strict reports every marked mistake, on its line, and nothing else."""
    problems = mismatches(expectations(path), _of(path, pyright_wrong), "pyright")
    assert not problems, "\n".join([f"{path.name}:", *problems])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", _each(WRONG_FILES))
def test_mypy_reports_each_mistake(path: Path, mypy_wrong: list[Diagnostic]) -> None:
    """Issue 2: mypy --strict reports every marked mistake, on its line, and nothing else."""
    problems = mismatches(expectations(path), _of(path, mypy_wrong), "mypy")
    assert not problems, "\n".join([f"{path.name}:", *problems])
