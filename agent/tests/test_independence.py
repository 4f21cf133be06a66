"""The agent is a package of its own: it talks to Fieldwatch over the wire only, never through its code."""

import ast
from pathlib import Path

import fieldwatch_agent

FORBIDDEN = ("apps", "config", "tests", "django", "rest_framework")


def test_the_agent_imports_nothing_of_the_platform():
    package = Path(fieldwatch_agent.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    assert offenders == []
