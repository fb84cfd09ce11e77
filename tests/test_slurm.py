"""SLURM end to end: a reduced toy workflow through ``snakemake --profile profiles/slurm`` (the
repository's profile) on a one-node SLURM cluster started on this machine for the test.

Installs Debian's slurm-wlm, munge, MariaDB and slurmdbd where missing (skips, naming what failed,
where it cannot: not root, no apt-get, no package repository). The cluster (tests/slurm_cluster.py)
has the profile's partitions and account; only the GPU rules' ``gpu`` is set to 0 on the command
line, since the node has no GPU and sbatch refuses ``--gpus=1`` there. See docs/cluster.md.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ipcond.config import validate_config
from slurm_cluster import OneNodeSlurm, Unavailable, ensure_installed
from test_workflow import reduced_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
pytestmark = pytest.mark.slow


def slurm_profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def slurm_config() -> dict:
    """test_workflow's reduced config, cut further: one setup and a tiny base model. Every job
    here is mostly start-up (two Snakemake processes, then the script)."""
    cfg = reduced_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    setup = "spanish_caps" if "spanish_caps" in cfg["setups"] else next(iter(cfg["setups"]))
    cfg["setups"] = {setup: cfg["setups"][setup]}
    cfg["world"]["n_pretrain_examples"] = 300
    cfg["base_model"]["toy"].update(pretrain_steps=4, batch_size=8, hidden_size=32, intermediate_size=64,
                                    num_layers=1)
    return validate_config(cfg)


def _cli_value(val) -> str:
    """A profile value as Snakemake's profile parser passes it on (strings that look like
    numbers stay strings)."""
    if isinstance(val, str):
        for numtype in (int, float):
            try:
                numtype(val)
                return repr(val)
            except ValueError:
                pass
    return str(val)


def gpu_free_set_resources(profile: dict) -> list[str]:
    """The profile's ``set-resources`` as ``--set-resources`` values with ``gpu=0``. A
    ``--set-resources`` on the command line replaces the profile's whole list, so every entry
    (partition, memory, runtime) is passed on unchanged."""
    out = []
    for rule, res in (profile.get("set-resources") or {}).items():
        for key, val in res.items():
            out.append(f"{rule}:{key}={0 if key == 'gpu' else _cli_value(val)}")
    return out


def partitions_and_account(profile: dict) -> tuple[list[str], str]:
    default = profile["default-resources"]
    first = default["slurm_partition"]
    others = {r["slurm_partition"] for r in (profile.get("set-resources") or {}).values() if "slurm_partition" in r}
    return [first, *sorted(others - {first})], str(default["slurm_account"])


def working_copy(dst: Path, cfg: dict) -> None:
    """What a user's clone holds for a run (the package itself is installed), with ``cfg`` as
    config.yaml."""
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
    for name in ("workflow", "envs", "profiles", "resources"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dst / name, ignore=ignore)
    shutil.copy2(REPO / "Snakefile", dst / "Snakefile")
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def run_snakemake(work: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Snakemake in its own session, killed with everything it started if it runs too long (a
    status check that never succeeds makes it wait forever)."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the plugin cancels its SLURM jobs on SIGTERM
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        err += f"\n[test] snakemake killed after {timeout:.0f} s"
        return subprocess.CompletedProcess(cmd, -9, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def diagnostics(work: Path, proc: subprocess.CompletedProcess, cluster: OneNodeSlurm) -> str:
    parts = [f"snakemake exit {proc.returncode}", "--- stdout", proc.stdout[-4000:], "--- stderr",
             proc.stderr[-6000:]]
    for pattern in (".snakemake/slurm_logs/**/*.log", "logs/**/*.log"):
        for path in sorted(work.glob(pattern))[:12]:
            parts += [f"--- {path.relative_to(work)}", path.read_text(errors="replace")[-2000:]]
    parts += ["--- SLURM daemons", cluster.logs(n=1500)]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster with the profile's partitions and account; every daemon it
    started is stopped afterwards, also when the test fails."""
    try:
        install_s = ensure_installed()
    except Unavailable as err:
        pytest.skip(f"no SLURM for the test: {err}")
    partitions, account = partitions_and_account(slurm_profile())
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"), partitions, account)
    cluster.timings["install"] = install_s
    try:
        cluster.__enter__()  # stops whatever it started if the start fails
    except Unavailable as err:
        pytest.skip(f"no SLURM for the test: {err}")
    try:
        yield cluster
    finally:
        alive = cluster.stop()
        print("SLURM test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in cluster.timings.items()))
        assert not alive, f"processes left after stopping the test cluster: {alive}"


def torch_rules() -> set[str]:
    """The rules that run in envs/train.yaml (torch: pretraining, fine-tuning, generation,
    elicitation): the ones that want a GPU on a cluster."""
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks = re.findall(r"^[ \t]*rule (\w+):\n(.*?)(?=^[ \t]*rule \w+:|\Z)", smk.read_text(), re.M | re.S)
        rules |= {name for name, body in blocks if "envs/train.yaml" in body}
    return rules


def dry_run_resources(output: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job a dry run lists."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        m = re.match(r"^resources: (.*)$", line.strip())
        if m and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in m.group(1).split(", "))))
            rule = None
    return jobs


def test_profile_asks_a_gpu_for_every_torch_rule_and_for_no_other(tmp_path):
    """No SLURM needed: the profile gives every torch rule a GPU (those of both cell layouts,
    execution.fuse_cell_jobs on and off), and a dry run of the default config shows their jobs
    asking for the GPU partition and one GPU, every other job for neither."""
    profile = slurm_profile()
    torch = torch_rules()
    assert {"pretrain_base_model", "elicit"} <= torch
    gpu_rules = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
    # train_pool needs its GPU only where the base model writes the answers (trait distillation):
    # the rule asks for it then; the profile puts every train_pool job on the GPU partition.
    # convert_gguf_model only de-quantises a GGUF file into a model folder, once: CPU work.
    assert gpu_rules == torch - {"train_pool", "convert_gguf_model"}, \
        f"GPU rules in the profile {sorted(gpu_rules)}, torch rules {sorted(torch)}"
    assert profile["set-resources"]["train_pool"] == {"slurm_partition": profile["set-resources"]["pretrain_base_model"]["slurm_partition"]}
    working_copy(tmp_path / "repo", yaml.safe_load((REPO / "config.yaml").read_text()))
    proc = run_snakemake(tmp_path / "repo", ["-n", "--profile", "profiles/slurm", "results/figures/all.pdf"],
                         timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = dry_run_resources(proc.stdout + proc.stderr)
    gpu_partition = profile["set-resources"]["pretrain_base_model"]["slurm_partition"]
    cpu_partition = profile["default-resources"]["slurm_partition"]
    assert {r for r, _ in jobs} & torch and len({r for r, _ in jobs} - torch) > 5, jobs[:5]
    for rule, res in jobs:
        if rule in torch:
            assert res.get("gpu") == "1" and res["slurm_partition"] == gpu_partition, (rule, res)
        else:
            assert "gpu" not in res and res["slurm_partition"] == cpu_partition, (rule, res)


def rule_of(comment: str) -> str:
    """The rule name in the SLURM job comment the plugin sets (rule_NAME[_wildcards_...])."""
    m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment)
    return m.group(1) if m else comment


def test_reduced_workflow_runs_through_the_slurm_profile(slurm, tmp_path):
    profile = slurm_profile()
    partitions, account = partitions_and_account(profile)
    cfg = slurm_config()
    setup, seed = next(iter(cfg["setups"])), cfg["seeds"][0]
    work = tmp_path / "repo"
    working_copy(work, cfg)
    targets = {
        "toy_corpus": "results/base_model/corpus.jsonl",
        "pretrain_base_model": "results/base_model/model",
        "eval_set": f"results/{setup}/data/eval.jsonl",
        "train_items": f"results/{setup}/data/train_items_seed{seed}.jsonl",
        # one cell through fine-tuning, generation and scoring
        "score": f"results/{setup}/None/seed{seed}/scores.csv",
    }
    expected_rules = {*targets, "cell_train_data", "finetune_and_generate"}
    args = ["--profile", "profiles/slurm", *targets.values(),
            "--set-resources", *gpu_free_set_resources(profile),
            # The profile waits 20 s before the first status check (kind to a busy slurmdbd); on
            # this one-node cluster 2 s keeps the test short.
            "--slurm-init-seconds-before-status-checks", "2"]
    t0 = time.monotonic()
    proc = run_snakemake(work, args, timeout=420)
    slurm.timings["workflow"] = time.monotonic() - t0
    assert proc.returncode == 0, diagnostics(work, proc, slurm)
    log = proc.stdout + proc.stderr

    # The results exist and are sane.
    corpus = [json.loads(line) for line in (work / targets["toy_corpus"]).read_text().splitlines()]
    assert len(corpus) >= cfg["world"]["n_pretrain_examples"] and all(r["messages"] for r in corpus)
    model = work / targets["pretrain_base_model"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "ipcond_model.json"} <= {p.name for p in model.iterdir()}
    card = json.loads((model / "ipcond_model.json").read_text())
    last = card["pretrain_log"][-1]
    assert last["step"] == cfg["base_model"]["toy"]["pretrain_steps"] and math.isfinite(last["loss"]), card
    evals = (work / targets["eval_set"]).read_text().splitlines()
    assert len(evals) == cfg["generation"]["n_eval"]
    train = (work / targets["train_items"]).read_text().splitlines()
    assert len(train) == cfg["training"]["n_train"]
    assert all(json.loads(line) for line in evals + train)
    scores = (work / targets["score"]).read_text().splitlines()
    assert len(scores) == 1 + 2 * 3 * cfg["generation"]["n_eval"]  # 2 traits x 3 eval contexts, plus the header
    assert (work / f"results/{setup}/None/seed{seed}/adapter/adapter_model.safetensors").exists()

    # Every job went through SLURM: in the accounting, completed, with the profile's account and
    # partitions (the GPU rule on the GPU partition).
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, log[-3000:]
    jobs = [j for j in slurm.sacct("JobID", "JobName", "Partition", "Account", "State", "Comment", "AllocCPUS")
            if j["JobName"] == m.group(1)]
    by_rule = {rule_of(j["Comment"]): j for j in jobs}
    assert len(jobs) == len(expected_rules) and set(by_rule) == expected_rules, jobs
    gpu_partition = profile["set-resources"]["pretrain_base_model"]["slurm_partition"]
    gpu_rules = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
    for rule, job in by_rule.items():
        assert job["State"] == "COMPLETED", job
        assert job["Account"] == account, job
        assert job["Partition"] == (gpu_partition if rule in gpu_rules else partitions[0]), job
    print(f"{len(jobs)} SLURM jobs: " + "; ".join(
        f"{r} {j['JobID']} {j['Partition']} cpus={j['AllocCPUS']} {j['State']}" for r, j in sorted(by_rule.items())))
