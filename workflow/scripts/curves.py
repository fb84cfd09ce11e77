"""Thin wrapper: see ipcond.jobs."""
import re

from ipcond.jobs import curves_setup, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
cells = []
for adapter, train in zip(sm.input.adapters, sm.input.train):
    m = re.search(r"results/[^/]+/([^/]+)/seed(\d+)/adapter$", adapter)
    cells.append({"condition": m.group(1), "seed": int(m.group(2)), "adapter": adapter, "train": train})
with log_to(sm.log[0]):
    curves_setup(sm.config, sm.wildcards.setup, cells, sm.input.eval, sm.output.samples, sm.output.table, sm.threads)
