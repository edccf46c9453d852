"""The documentation holds together: the README stays short, every relative link (and its
#anchor) leads somewhere, the README's results are the figures of the pages they link to, and
`make help` lists every Makefile target."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """A page's Markdown without its fenced code blocks (a notebook: its Markdown cells)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.M)}


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 12_000


def test_server_page_starts_with_a_title():
    assert (ROOT / "docs" / "server.md").read_text().startswith("# ")


@pytest.mark.parametrize("page", [*PAGES, ROOT / "docs" / "tutorial.ipynb"],
                         ids=lambda p: p.name)
def test_relative_links_lead_somewhere(page):
    broken = []
    for _, target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_readme_results_are_the_figures_of_the_linked_pages():
    table = prose(ROOT / "README.md").split("## Results", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for text, target in LINK.findall(table):
        page = (ROOT / target.partition("#")[0]).read_text()
        for figure in re.findall(r"\d[\d,]*(?:\.\d+)?", text):
            assert figure in page, f"README says {figure} ({text}); {target} does not"
            checked += 1
    assert checked >= 15


def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    shown = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True,
                           text=True, check=True, timeout=60).stdout
    listed = set(re.findall(r"^make (\S+)", shown, flags=re.M))
    assert targets and listed == targets
