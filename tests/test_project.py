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
