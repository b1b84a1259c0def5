"""MemLab-Flow's check of a finished run (a benchmark, not a test): evidence of memorization, then the demo's maps.

    OMP_NUM_THREADS=2 python tests/bench_memlab_flow_run.py RUN [--seeds 8] [--first-seed 0]

RUN is a `memcurv train-memlab RUN --family flow` folder. It prints, for the final model and the early checkpoint,
MemLab's reproduction table (`memlab.evidence.reproduction`: reproduced share of each memorized prompt, novelty of the
generalizing ones, the frame's error), then computes the demo's maps (its prompts, 4 seeds from `--first-seed`, the
`fast` procedure) captured at the last four Euler levels and prints, per level, the demo's scores (reference-protocol
IoU on TV and all, region ratios on template samples) and each map's detection AUC. It is what decides whether a run is
good enough to bundle, and at which level the demo reads its maps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from memcurv.evaluate.table import evaluate_dataset, paper_table
from memcurv.groundtruth import with_truth
from memcurv.maps import compute_maps, maps_settings, plan_maps
from memcurv.memlab.data import MemLab
from memcurv.memlab.demo import DEMO_GENERALIZING, score_maps
from memcurv.memlab.evidence import reproduction
from memcurv.memlab.truth import memlab_truth
from memcurv.models.load import load_model

SHOWN = ("raw curvature", "dh_uncond", "ds_uncond", "dh_checkpoint", "ds_checkpoint", "all-ones")


def evidence(run: str, seeds) -> None:
    "MemLab's reproduction table of the final model and of the early checkpoint."
    for name in ("final", "early"):
        model, _ = load_model(f"{run}/{name}")
        start = time.perf_counter()
        table = reproduction(model, seeds=seeds)
        print(f"\n{name}: reproduction over seeds {seeds.start}–{seeds.stop - 1} ({time.perf_counter() - start:.0f} s)")
        print(table.round(4).to_string())


def level_scores(run: str, first_seed: int, lab: MemLab) -> None:
    "The demo's scores and detection AUCs of the maps captured at each of the last four Euler levels."
    model, early = load_model(f"{run}/final", checkpoint=f"{run}/early")
    plan = plan_maps(model, maps_settings("fast", model=model, capture_steps=(-4, -3, -2, -1)), early)
    start = time.perf_counter()
    ds = compute_maps(model, lab.templated + lab.verbatim + list(DEMO_GENERALIZING),
                      range(first_seed, first_seed + 4), plan, progress=False)
    print(f"\nmaps of {ds.sizes['sample']} samples at 4 levels in {time.perf_counter() - start:.0f} s")
    ds = with_truth(ds, memlab_truth(lab))
    ds["constraint_mask"] = (("image_y", "image_x"), lab.constraint_mask.numpy().astype(np.uint8))
    for t in ds.timestep.values:
        at = ds.sel(timestep=[t])
        scores = score_maps(at).query("method in @SHOWN")
        auc = paper_table(evaluate_dataset(at))["det_auc"].rename("det_auc")
        table = scores.pivot(index="method", columns="subset", values="iou").join(
            scores.drop_duplicates("method").set_index("method")[["constraint_to_rest", "constraint_to_memorized"]])
        print(f"\nnoise level s = {float(t) / 1000:.4f}")
        print(table.join(auc).loc[list(SHOWN)].round(3).to_string())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished `memcurv train-memlab RUN --family flow` folder")
    p.add_argument("--seeds", type=int, default=8, help="seeds per prompt for the reproduction table")
    p.add_argument("--first-seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    pd.set_option("display.width", 160)
    lab = MemLab()
    evidence(args.run, range(args.first_seed, args.first_seed + args.seeds))
    level_scores(args.run, args.first_seed, lab)


if __name__ == "__main__":
    main()
