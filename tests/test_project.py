"""Project invariants: CI runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    test_command = commands.splitlines()[3]
    assert "pytest" in test_command and "constraints.txt" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_torch_is_pinned_to_the_cpu_wheel():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()


def _heading_anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    titles = [line.lstrip("#").strip() for line in markdown.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def test_every_link_in_the_readme_and_docs_resolves():
    broken = []
    for markdown in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", markdown.read_text()):
            if link.startswith(("http://", "https://")):
                continue
            path, _, anchor = link.partition("#")
            target = (markdown.parent / path).resolve() if path else markdown
            if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _heading_anchors(target)):
                broken.append(f"{markdown.relative_to(ROOT)}: {link}")
    assert not broken


def test_the_docs_refer_to_nothing_outside_the_repository():
    """Sources are named by what they are (docs/sources.md), never by a file number or a path outside the repo."""
    outside = ["spec " + "000", "spec " + "003", "anchors" + ".md", "../" + "shared", "to" + "do"]
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "src" / "ninlab" / "configs").glob("*.yaml")]
    found = [f"{f.relative_to(ROOT)}: {word}" for f in files for word in outside if word in f.read_text().lower()]
    assert not found
