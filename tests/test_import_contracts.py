"""The package's import contracts, as import-linter checks them from pyproject.toml.

Two contracts: layers import only downward, and api/ reaches the engine only through
the EngineClient interface. The first test runs them on the package as it is. The others
prove each can fail: they copy the package under another name, add one forbidden import,
and expect that contract to be broken there. The copy is renamed because an editable
install would otherwise shadow it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    # The console script of the running interpreter's environment, not whatever is on PATH.
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())", "--no-cache"]
    env = {"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts(tmp_path):
    project = copy_package(tmp_path, "ruvonvllm_copy")
    result = lint_imports(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "imports", "broken"), [
    # ops, the lowest layer but config, importing the engine
    ("ops/upward.py", "engine.llm_engine import LLMEngine", "ruvonvllm_copy layers import only downward BROKEN"),
    # api reaching past the engine client into the engine it wraps
    ("api/reach.py", "engine.llm_engine import LLMEngine",
     "api reaches the engine only through EngineClient and its stream types BROKEN"),
])
def test_a_deliberate_violation_breaks_a_contract(tmp_path, module, imports, broken):
    project = copy_package(tmp_path, "ruvonvllm_copy")
    (project / "ruvonvllm_copy" / module).write_text(f"from ruvonvllm_copy.{imports}\n")
    result = lint_imports(project)
    assert result.returncode != 0
    assert "1 kept, 1 broken" in result.stdout, result.stdout[-3000:]
    assert broken in result.stdout


def copy_package(tmp_path: Path, name: str) -> Path:
    """The package's sources and pyproject.toml's import contract, with `ruvonvllm` renamed to name."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "ruvonvllm", project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    rename = re.compile(r"\bruvonvllm\b")
    for source in (project / name).rglob("*.py"):
        source.write_text(rename.sub(name, source.read_text()))
    config = (ROOT / "pyproject.toml").read_text()
    contract = config[config.index("[tool.importlinter]"):]
    (project / "pyproject.toml").write_text(rename.sub(name, contract))
    return project
