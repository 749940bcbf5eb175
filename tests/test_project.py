"""Project invariants: CI runs exactly the README's test command."""

import ast
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


def _library_hooks() -> set[str]:
    """Names of the methods ninlab's classes override on the libraries' base classes.

    An override is documented by the library that calls it (Lightning's hook reference, ``logging.Filter.filter``,
    ``nn.Module.forward``...): ninlab documents only what it adds, so these names are not required to carry a
    docstring of their own.
    """
    import logging

    from lightning.pytorch import Callback, LightningDataModule, LightningModule
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.profilers import Profiler
    from torch import nn
    from torch.utils.data import Dataset, Sampler

    bases = (Callback, LightningDataModule, LightningModule, ModelCheckpoint, TQDMProgressBar, LightningCLI, Profiler,
             logging.Filter, nn.Module, Dataset, Sampler)  # fmt: skip
    return {name for base in bases for name in dir(base)}


def test_every_public_object_has_a_docstring():
    hooks = _library_hooks()
    missing = []
    for path in sorted((ROOT / "src" / "ninlab").rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(ROOT / "src")
        if not ast.get_docstring(tree) and path.name != "__main__.py":
            missing.append(f"{where}: module")
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
                continue
            if not ast.get_docstring(node):
                missing.append(f"{where}: {node.name}")
            if isinstance(node, ast.ClassDef):
                overrides = hooks if node.bases else set()
                for item in node.body:
                    if (isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                            and item.name not in overrides and not ast.get_docstring(item)):  # fmt: skip
                        missing.append(f"{where}: {node.name}.{item.name}")
    assert not missing, "public objects without a docstring:\n" + "\n".join(missing)


def test_bench_points_every_recipes_time_to_accuracy_at_a_section_of_the_docs():
    from ninlab.bench.suite import TIME_TO_ACCURACY

    for recipe, where in TIME_TO_ACCURACY.items():
        path, _, anchor = where.partition("#")
        assert (ROOT / "configs" / f"{recipe}.yaml").is_file(), recipe
        assert anchor in _heading_anchors(ROOT / path), where
