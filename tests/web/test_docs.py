"""
Issue 13: the README's "Task list on the web" section stays true: its screenshots exist, its command's options too.

(``docs/web.md``'s Python examples run as doctests; the browser test makes the screenshots.)
"""

from __future__ import annotations

import re

from tests.cli.conftest import ROOT, orch_process


def section() -> str:
    """The README's section on the web."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Task list on the web")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_screenshots_are_pngs_in_docs() -> None:
    """Issue 13: each image the section shows is a PNG under docs/ (made by tests/web/test_browser.py)."""
    images = re.findall(r"!\[[^]]*\]\((docs/[^)]+)\)", section())
    assert ["docs/web-inbox.png", "docs/web-instance.png"] == images
    for image in images:
        assert (ROOT / image).read_bytes().startswith(b"\x89PNG"), image


def test_the_readme_serve_command_names_options_orch_serve_has() -> None:
    """Issue 13: `orch serve --help` lists every option the README and docs/web.md use."""
    shown = orch_process("serve", "--help")
    assert 0 == shown.code, shown.err
    used = set(re.findall(r"orch serve [^\n#]*?(--[a-z-]+)", section() + (ROOT / "docs" / "web.md").read_text()))
    assert {"--dev-login"} <= used
    for option in used:
        assert option in shown.out, option
