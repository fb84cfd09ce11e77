"""The README's quick start holds exactly two command lines, and CI runs the second verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start_lines() -> list[str]:
    lines, in_section, in_block = [], False, False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("#"):
            if in_section and not in_block:
                break
            in_section = "quick start" in line.lower()
            continue
        if in_section and line.startswith("```"):
            if in_block:
                break
            in_block = True
            continue
        if in_section and in_block and line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    return lines


def test_quick_start_has_two_lines_and_ci_runs_the_test_line():
    lines = quick_start_lines()
    assert len(lines) == 2, lines
    assert "snakemake --cores 2 results/figures/all.pdf" in lines[0]
    assert "pytest" in lines[1]
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert lines[1] in ci
