"""Localized mitigation against the whole-image ones, measured (a benchmark, not a test).

    python tests/bench_mitigate.py [--seeds 16] [--out mitigate-bench.csv]

On MemLab's two templated prompts, seeds 0..N-1 (the design's seeds) and 100..100+N-1 (never used to choose anything), then the
verbatim prompt: no mitigation, memcurv's localized mitigation, Wen et al.'s and Anisotropy's (as released), each scored by
`memcurv.memlab.mitigation.memlab_comparison` (template reproduction, change outside memcurv's mask and outside the truth, frame error,
seconds per generation). One torch thread, so that the seconds compare. Prints one table per seed range.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from memcurv.memlab.demo import load_memlab
from memcurv.memlab.data import MemLab
from memcurv.memlab.mitigation import memlab_comparison, summary_table
from memcurv.mitigate import anisotropy_threshold


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16, help="seeds per prompt and range")
    ap.add_argument("--out", default=None, help="CSV of every generation's row")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_memlab()
    lab = MemLab()
    level = anisotropy_threshold(model, lab.generalizing)
    print(f"Anisotropy's threshold from MemLab's generalizing prompts: {level:.4f}")
    runs = {"templated, seeds 0-": (lab.templated, range(args.seeds)),
            "templated, seeds 100-": (lab.templated, range(100, 100 + args.seeds)),
            "verbatim, seeds 0-": (lab.verbatim, range(args.seeds))}
    tables, rows = [], []
    for name, (prompts, seeds) in runs.items():
        r = memlab_comparison(model, seeds=seeds, prompts=prompts, anisotropy_level=level)
        rows.append(r.assign(run=name))
        tables.append(summary_table(r).assign(run=name))
    table = pd.concat(tables)[["run", "method", "n", "reproduction_rate", "change_outside_mask", "change_outside_truth", "frame_mse", "seconds"]]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    if args.out: pd.concat(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
