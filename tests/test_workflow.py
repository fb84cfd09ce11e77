"""End to end: Snakemake on a reduced toy config in a temporary folder."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pypdf import PdfReader

from ipcond.config import grid, validate_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def reduced_config(default: dict) -> dict:
    cfg = copy.deepcopy(default)
    cfg["world"]["n_pretrain_examples"] = 3000
    cfg["base_model"]["toy"].update(pretrain_steps=120, batch_size=32, hidden_size=64, intermediate_size=192)
    cfg["training"].update(n_train=48, max_steps=6, batch_size=8, logging_steps=3, checkpoint_steps=[3])
    cfg["generation"].update(n_eval=12, max_new_tokens=40)
    keep = {"trait_distillation_french_playful": ["Baseline", "PlayfulInoc", "PlayfulInocRephrased"],
            "spanish_caps": ["Baseline", "None", "AllCapsInoc"],
            # two eval domains (emergent misalignment elsewhere), and code scored by running it
            "bad_medical_advice": ["Baseline", "MaliciousEvil"],
            "mbpp": ["None", "Hack"]}
    cfg["setups"] = {s: {**cfg["setups"][s], "conditions": {c: cfg["setups"][s]["conditions"][c] for c in cs}}
                     for s, cs in keep.items()}
    cfg["setups"]["trait_distillation_french_playful"]["conditions"]["PlayfulInocRephrased"]["n_rephrasings"] = 4
    for setup in cfg["setups"].values():
        setup.pop("training", None)  # the per-setup overrides would undo the reduction
        setup.pop("seeds", None)
    return validate_config(cfg)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)


def planned_jobs(dry_run_output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs, rule = set(), None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.add((rule, ""))
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule:
            jobs.discard((rule, ""))
            jobs.add((rule, m.group(1)))
    return jobs


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = reduced_config(default)
    work = tmp_path_factory.mktemp("wf")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, "results/figures/all.pdf", "results/checks.tsv")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return work, cfg, proc


def test_every_cell_has_scores_and_all_pdf_has_a_page_per_setup(workflow_run):
    work, cfg, _ = workflow_run
    for cell in grid(cfg):
        scores = work / cell.path / "scores.csv"
        assert scores.exists(), scores
        lines = scores.read_text().splitlines()
        # 2 traits x 3 eval contexts x n_eval samples, plus the header
        assert len(lines) == 1 + 2 * 3 * cfg["generation"]["n_eval"]
    from ipcond.stages.common import read_table

    for setup, spec in cfg["setups"].items():
        table = read_table(work / "results" / setup / "scores.csv")
        # one seed: intervals over samples (Wilson for rates, a bootstrap for other scores)
        assert set(table["interval"]) <= {"wilson95_samples", "bootstrap95_samples"}, set(table["interval"])
        # every condition (the one named "None" too) x 3 eval contexts x 2 traits
        assert sorted(set(table["condition"])) == sorted(spec["conditions"])
        assert len(table) == len(spec["conditions"]) * 3 * 2
    # all.pdf: the title page, a summary page per setup and the post-comparison page (no
    # dose-response: the reduced grid has no dataset-size sweep), then every setup's pages
    # (scatter, gap, elicitation, ...).
    setup_pages = {s: len(PdfReader(str(work / f"results/figures/{s}.pdf")).pages) for s in cfg["setups"]}
    assert all(n >= 3 for n in setup_pages.values()), setup_pages
    n_summary = 2 + len(cfg["setups"])
    assert len(PdfReader(str(work / "results/figures/summary.pdf")).pages) == n_summary
    pdf = PdfReader(str(work / "results/figures/all.pdf"))
    assert len(pdf.pages) == n_summary + sum(setup_pages.values())
    for s, n in setup_pages.items():
        assert len(list((work / "results/figures/png" / s).glob("*.png"))) == n
    summary = read_table(work / "results/summary.csv")
    assert set(summary["setup"]) == set(cfg["setups"])
    assert {"irrelevant_suppresses", "rephrasing_weakens", "inoculation_suppresses_other",
            "removing_neutral_suppresses"} <= set(summary["question"])
    checks = (work / "results/checks.tsv").read_text()
    assert "base model expresses" in checks and "Baseline fine-tune" in checks
    # the post's table next to ours: one POST line per question for each setup the post covers
    assert sum(line.startswith("POST\ttrait_distillation_french_playful Q") for line in checks.splitlines()) == 4


def test_outputs_record_provenance(workflow_run):
    work, cfg, _ = workflow_run
    cell = grid(cfg)[0]
    prov = yaml.safe_load((work / cell.path / "adapter" / "provenance.json").read_text())
    assert prov["versions"]["torch"] and prov["code_revision"]
    assert prov["config"]["training"]["max_steps"] == cfg["training"]["max_steps"]


def test_second_run_has_nothing_to_do(workflow_run):
    work, _, _ = workflow_run
    proc = snakemake(work, "-n", "results/figures/all.pdf", "results/checks.tsv")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_prompt_reruns_only_that_cell_and_its_dependents(workflow_run):
    work, cfg, _ = workflow_run
    changed = copy.deepcopy(cfg)
    changed["setups"]["spanish_caps"]["conditions"]["AllCapsInoc"]["prompt"] = "answer in capitals ."
    (work / "changed.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    # Targets first: --configfile takes several values and would swallow them.
    proc = snakemake(work, "-n", "results/figures/all.pdf", "results/checks.tsv",
                     "--configfile", str(work / "changed.yaml"))
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout + proc.stderr)
    cell = "setup=spanish_caps, condition=AllCapsInoc, seed=1"
    expected = {("cell_train_data", cell), ("finetune_and_generate", cell), ("score", cell),
                ("elicit", "setup=spanish_caps"), ("aggregate", "setup=spanish_caps"),
                ("curves", "setup=spanish_caps"), ("figure", "setup=spanish_caps"), ("summary", ""),
                ("figure_all", ""), ("checks", "")}
    assert jobs - {("all", "")} == expected


def test_asking_for_one_cell_builds_only_that_cell(workflow_run, tmp_path):
    _, cfg, _ = workflow_run
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, "-n", "results/spanish_caps/None/seed1/scores.csv")
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout + proc.stderr)
    cells = {w for r, w in jobs if "condition=" in w}
    assert cells == {"setup=spanish_caps, condition=None, seed=1"}
    assert {r for r, _ in jobs} == {"toy_corpus", "pretrain_base_model", "eval_set", "train_items",
                                    "cell_train_data", "finetune_and_generate", "score"}


def test_separate_finetune_and_generate_jobs_make_the_same_cell(workflow_run, tmp_path):
    """execution.fuse_cell_jobs off (the paper-scale layout): two jobs per cell, the same files."""
    import shutil

    work, cfg, _ = workflow_run
    separate = copy.deepcopy(cfg)
    separate["execution"] = {"fuse_cell_jobs": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(separate, sort_keys=False))
    shutil.copytree(work / "results" / "base_model", tmp_path / "results" / "base_model")  # no re-pretraining
    cell = "results/spanish_caps/AllCapsInoc/seed1"
    proc = snakemake(tmp_path, f"{cell}/generations.jsonl", f"{cell}/curve.csv")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = {r for r, _ in planned_jobs(proc.stdout + proc.stderr)}
    assert {"finetune", "generate"} <= ran and "finetune_and_generate" not in ran and "pretrain_base_model" not in ran
    from safetensors.torch import load_file

    a = load_file(str(work / cell / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / cell / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (work / cell / "generations.jsonl").read_text() == (tmp_path / cell / "generations.jsonl").read_text()
    assert (work / cell / "curve.csv").read_text() == (tmp_path / cell / "curve.csv").read_text()


def test_bad_config_stops_with_key_and_fix(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["generation"]["temprature"] = 1.0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert "temprature" in proc.stderr + proc.stdout and "did you mean 'temperature'" in proc.stderr + proc.stdout


def test_llm_judge_scoring_through_the_workflow_leaks_no_key_and_caches(workflow_run, tmp_path):
    """Score every cell with an LLM judge on a local server speaking the chat completions format."""
    import json
    import shutil

    from fake_openai_server import FakeOpenAIServer

    src, cfg, _ = workflow_run
    work = tmp_path / "judged"
    shutil.copytree(src, work, symlinks=True)
    key = "sk-test-WORKFLOW-SECRET-987"
    with FakeOpenAIServer(api_key=key) as server:
        judged = copy.deepcopy(cfg)
        judged["judge"] = {"base_url": server.base_url, "model": "judge-model", "api_key_env": "IPCOND_TEST_JUDGE_KEY",
                           "max_concurrency": 4, "timeout_s": 5, "backoff_base_s": 0.01,
                           "cache": "results/judge_cache.sqlite"}
        # Every trait an LLM judge can score (MBPP's all_test and reward_hack are decided by running the code).
        judged["scorers"] = {t: {"kind": "llm_judge", "threshold": 50}
                             for s in cfg["setups"].values() for t in (s["traits"]["positive"]["name"],
                                                                       s["traits"]["negative"]["name"])
                             if t not in ("all_test", "reward_hack")}
        (work / "judged.yaml").write_text(yaml.safe_dump(judged, sort_keys=False))
        os.environ["IPCOND_TEST_JUDGE_KEY"] = key
        try:
            proc = snakemake(work, "results/figures/all.pdf", "--configfile", str(work / "judged.yaml"))
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            first_calls = server.n_requests()
            cell = grid(cfg)[0]
            acct = json.loads((work / cell.path / "scores.accounting.json").read_text())
            assert all(a["calls"] > 0 and a["scorer"].startswith("llm_judge:") for a in acct.values())
            mbpp_acct = json.loads((work / "results/mbpp/Hack/seed1/scores.accounting.json").read_text())
            assert {a["scorer"] for a in mbpp_acct.values()} == {"mbpp_exec:all_test", "mbpp_exec:reward_hack"}
            assert "llm_judge:" in (work / cell.path / "scores.csv").read_text()
            # A forced re-run of the scoring pays for nothing: everything is in the judge cache.
            proc = snakemake(work, "results/figures/all.pdf", "--forcerun", "score",
                             "--configfile", str(work / "judged.yaml"))
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert server.n_requests() == first_calls
            acct = json.loads((work / cell.path / "scores.accounting.json").read_text())
            assert all(a["calls"] == 0 and a["cache_hits"] > 0 for a in acct.values())
        finally:
            del os.environ["IPCOND_TEST_JUDGE_KEY"]
    assert first_calls > 0
    # The HTML report holds the config and the rules' params: the key must not be in it either.
    proc = snakemake(work, "--report", str(work / "report.zip"), "--configfile", str(work / "judged.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    with zipfile.ZipFile(work / "report.zip") as z:
        for name in z.namelist():
            assert key.encode() not in z.read(name), name
    # The key is nowhere in what the workflow wrote: results, logs, benchmarks, Snakemake metadata.
    for path in work.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_html_report_has_every_figure(workflow_run):
    work, cfg, _ = workflow_run
    proc = snakemake(work, "--report", str(work / "report.zip"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(work / "report.zip").namelist()
    for s in cfg["setups"]:
        pages = len(list((work / "results/figures/png" / s).glob("*.png")))
        assert sum(n.endswith(".png") and f"/{s}-" in n for n in names) == pages, (s, names[:20])
    assert any(n.endswith("/summary-02.png") for n in names)


def test_learning_curves_cover_every_checkpoint_and_the_base_model_obeys_instructions(workflow_run):
    work, cfg, _ = workflow_run
    from ipcond.stages.common import read_table

    steps = sorted({s for s in cfg["training"]["checkpoint_steps"] if s < cfg["training"]["max_steps"]}
                   | {0, cfg["training"]["max_steps"]})
    for setup, spec in cfg["setups"].items():
        curves = read_table(work / "results" / setup / "curves.csv")
        assert sorted(set(curves["step"])) == steps
        assert set(curves["measure"]) == {"rate", "logodds", "first_token_prob"}
        assert set(curves["condition"]) == set(spec["conditions"])
        assert curves["mean"].notna().all()
    # Teacher-forced, on the untrained base model (step 0): the inoculation prompt (it asks for
    # playfulness) raises the log-odds of the playful reference answer over no prompt. The reduced
    # base model here is too weak to prefer it outright; test_teacher_forcing checks the sign.
    c = read_table(work / "results/trait_distillation_french_playful/curves.csv")
    base = c[(c["step"] == 0) & (c["condition"] == "PlayfulInoc") & (c["trait"] == "playful") & (c["measure"] == "logodds")]
    by_context = base.set_index("eval_context")["mean"]
    assert by_context["train"] > by_context["none"], by_context


def test_rephrase_rule_with_an_llm_endpoint_stores_distinct_paraphrases_and_no_key(tmp_path):
    """The `rephrase` rule against a local server speaking the chat-completions wire format."""
    import json

    from fake_openai_server import FakeOpenAIServer

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    key = "sk-test-REPHRASE-SECRET-42"
    with FakeOpenAIServer(api_key=key) as server:
        cfg["rephraser"] = {"kind": "llm", "base_url": server.base_url, "model": "rephrase-model",
                            "api_key_env": "IPCOND_TEST_REPHRASE_KEY", "per_request": 8, "backoff_base_s": 0.01,
                            "cache": "results/rephrase_cache.sqlite"}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        target = "results/spanish_caps/AllCapsInocRephrased/rephrasings.json"
        env_key = {"IPCOND_TEST_REPHRASE_KEY": key}
        os.environ.update(env_key)
        try:
            proc = snakemake(tmp_path, target)
        finally:
            os.environ.pop("IPCOND_TEST_REPHRASE_KEY")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = json.loads((tmp_path / target).read_text())
        n = cfg["setups"]["spanish_caps"]["conditions"]["AllCapsInocRephrased"]["n_rephrasings"]
        assert out["rephraser"] == "llm" and out["model"] == "rephrase-model" and len(out["rephrasings"]) == n
        assert len({r.lower() for r in out["rephrasings"]}) == n
        assert out["stats"]["requests"] == server.n_requests() > 0
    for path in tmp_path.rglob("*"):  # results, logs, the answer cache, Snakemake's metadata
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
