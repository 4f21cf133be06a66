"""The house rules that keep the code changeable, checked on every test run (docs/architecture.md):

* dependencies run one way, ``core <- users <- devices <- telemetry <- alerts <- dashboard``: a lower app never
  imports a higher one, not even inside a function (a higher app reacts to a lower one through its signals);
* the audit log listens to everyone and is imported by no other app;
* nothing under ``apps/`` or ``config/`` imports ``tests``;
* no two modules of one app import each other, directly or round a loop.

Every import statement counts, wherever it stands (module level, function body, ``try``), because an import
hidden in a function is the usual way a cycle is dodged rather than removed. Migrations are left out: they refer
to other apps by label, as Django requires.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP_ORDER = ("core", "users", "devices", "telemetry", "alerts", "dashboard")
LISTENERS = ("audit",)  # above every app; imported by none
PRODUCT_PACKAGES = ("apps", "config")


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every Python module of the product, by dotted name, migrations aside."""
    modules = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.parts:
                modules[module_name(path, root)] = path
    return modules


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in the file; ``from package import module`` names the module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else base))
    return found


def app_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "apps" else None


def violations(root: pathlib.Path = ROOT) -> list[str]:
    """Every broken rule, as ``file:line: what``; empty when the house is in order."""
    modules = product_modules(root)
    known = set(modules)
    rank = {app: position for position, app in enumerate(APP_ORDER)}
    found = []
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        importer_app = app_of(name)
        where = path.relative_to(root)
        for line, imported in imports_of(name, path, known):
            if imported == "tests" or imported.startswith("tests."):
                found.append(f"{where}:{line}: product code imports test code ({imported})")
                continue
            imported_app = app_of(imported)
            if imported_app is None or importer_app is None or imported_app == importer_app:
                if imported_app is not None and imported_app == importer_app and imported in known:
                    edges[name].add(imported)
                continue
            if imported_app in LISTENERS:
                found.append(f"{where}:{line}: {importer_app} imports {imported} (the audit log is imported by no app)")
            elif importer_app in rank and imported_app in rank and rank[imported_app] > rank[importer_app]:
                found.append(
                    f"{where}:{line}: {importer_app} imports {imported}, which is above it in the app order "
                    "(react to its signal instead)"
                )
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each strongly connected group of modules (Tarjan), e.g. ``[a, b, a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_loop(sorted(group), edges) for group in groups]


def _loop(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A readable loop inside ``group`` starting at its first member."""
    members = set(group)
    path = [group[0]]
    while True:
        step = min(target for target in edges[path[-1]] if target in members)
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)


# ---------------------------------------------------------------------------------------------------------------------


def test_the_product_keeps_the_house_rules():
    assert violations() == []


@pytest.fixture
def house(tmp_path):
    """A small product tree to break the rules in, one file at a time."""

    def write(relative: str, source: str = "") -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != ".":
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(source)

    write("config/settings.py", "import apps.dashboard.views\n")
    write("apps/core/audit.py")
    write("apps/devices/models.py", "from apps.core import audit\n")
    write("apps/alerts/services.py", "from apps.devices.models import Device\n")
    write("apps/dashboard/views.py", "from apps.alerts import services\n")
    write("apps/audit/receivers.py", "from apps.alerts.services import x\n")
    write("apps/devices/migrations/0001_initial.py", "from apps.alerts import services\n")
    return tmp_path, write


def test_a_tree_following_the_rules_passes(house):
    root, _ = house
    assert violations(root) == []


def test_an_upward_import_fails_even_inside_a_function(house):
    root, write = house
    write("apps/devices/services.py", "def purge():\n    from apps.telemetry.models import Reading\n")
    write("apps/telemetry/models.py")

    assert violations(root) == [
        "apps/devices/services.py:2: devices imports apps.telemetry.models, which is above it in the app order "
        "(react to its signal instead)"
    ]


def test_importing_the_audit_app_fails(house):
    root, write = house
    write("apps/alerts/views.py", "from apps.audit.services import audit_record\n")
    write("apps/audit/services.py")

    assert violations(root) == [
        "apps/alerts/views.py:1: alerts imports apps.audit.services (the audit log is imported by no app)"
    ]


def test_product_code_importing_tests_fails(house):
    root, write = house
    write("config/celery.py", "try:\n    from tests.support import broker\nexcept ImportError:\n    broker = None\n")

    assert violations(root) == ["config/celery.py:2: product code imports test code (tests.support)"]


def test_a_cycle_inside_an_app_fails_also_through_relative_imports(house):
    root, write = house
    write("apps/alerts/escalation.py", "from .tasks import run\n")
    write("apps/alerts/tasks.py", "def run():\n    from apps.alerts import notifications\n")
    write("apps/alerts/notifications.py", "from apps.alerts.escalation import addresses\n")

    assert violations(root) == [
        "import cycle: apps.alerts.escalation -> apps.alerts.tasks -> apps.alerts.notifications -> "
        "apps.alerts.escalation"
    ]
