"""The library layer never imports Prefect; nothing imports flows."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_solar_sources_do_not_import_prefect_or_upper_layers():
    files = sorted((ROOT / "solar").rglob("*.py"))
    assert len(files) > 10
    for f in files:
        bad = imported_modules(f) & {"prefect", "tasks", "flows", "deployments"}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_tasks_do_not_import_flows():
    for f in sorted((ROOT / "tasks").rglob("*.py")):
        assert not imported_modules(f) & {"flows", "deployments"}, f


def test_importing_every_solar_module_loads_no_prefect():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in sorted((ROOT / "solar").rglob("*.py"))
        if p.name != "__init__.py" and "embedded" not in p.parts and "eval_tasks" not in p.parts
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
