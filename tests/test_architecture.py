"""The package's layout: layers without upward imports or cycles (import-linter's contracts in
pyproject.toml), one stage module per rule file, and modules of a readable size."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "ipcond"
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def run_lint(pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    out = run_lint(ROOT / "src")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("module, line", [
    ("prompts.py", "from .stages import common"),          # science importing a stage: upward
    ("config.py", "from .stages.cell import cell_job"),    # configuration importing a stage (the old cycle)
    ("stages/data.py", "from . import report"),            # report imports data's layer-mate: a cycle
])
def test_an_upward_import_or_a_cycle_breaks_a_contract(tmp_path, module, line):
    shutil.copytree(PKG, tmp_path / "ipcond", ignore=shutil.ignore_patterns("__pycache__"))
    if module == "stages/data.py":  # make report -> data exist too, so that data -> report closes a cycle
        rep = tmp_path / "ipcond" / "stages" / "report.py"
        rep.write_text(rep.read_text() + "\nfrom . import data  # noqa\n")
    target = tmp_path / "ipcond" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    out = run_lint(tmp_path)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout


def stage_modules_called(script: Path) -> set[str]:
    return set(re.findall(r"ipcond\.stages\.(\w+)", script.read_text())) - {"common"}


def test_each_rule_file_has_one_stage_module_holding_its_jobs():
    rule_files = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    seen_rules = 0
    for smk in rule_files:
        text = smk.read_text()
        for rule, script in re.findall(r"^\s*rule (\w+):.*?^\s*script:\s*\n\s*\"\.\./scripts/(\w+)\.py\"", text,
                                       re.M | re.S):
            mods = stage_modules_called(ROOT / "workflow" / "scripts" / f"{script}.py")
            assert mods == {smk.stem}, f"rule {rule} ({smk.name}) runs {script}.py, which calls ipcond.stages.{mods}"
            doc = (PKG / "stages" / f"{smk.stem}.py").read_text().split('"""')[1]
            assert f"``{rule}``" in doc, f"ipcond/stages/{smk.stem}.py's docstring does not name rule {rule}"
            seen_rules += 1
    stage_files = {p.stem for p in (PKG / "stages").glob("*.py")} - {"__init__", "common"}
    assert stage_files == {p.stem for p in rule_files} - {"common"}
    assert seen_rules >= 20


def test_no_module_but_the_plots_is_over_about_800_lines():
    sizes = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    big = {m: n for m, n in sizes.items() if n > 820 and m != "plots.py"}
    assert not big, big
