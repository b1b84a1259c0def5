"""MemLab-Flow's design check (a benchmark, not a test): a short pilot run of the flow recipe, then σ²κ per region.

    OMP_NUM_THREADS=1 python tests/bench_memlab_flow_pilot.py [--phase1-steps 300] [--phase2-steps 300] [--run DIR]

It trains `train_memlab(family="flow")` for a few hundred steps per phase (resumable in `--run`), then, as
[memlab.data](../nbs/memlab/00_data.ipynb) does for the UNet, noises training images of each memorized prompt (and a
generalizing one) to several noise levels s and prints σ²κ = σ J_ii (Hutchinson, 16 probes, averaged over channels) on
the constraint (the frame), the memorized region and the rest, for the conditional branch, the unconditional one and the
early checkpoint. It is what the long run's settings (phase lengths, the level the maps are read at) are chosen from.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch

from memcurv.curvature import coordinate_curvature
from memcurv.memlab.data import MemLab
from memcurv.memlab.train import train_memlab
from memcurv.models.load import load_model

LEVELS = (0.001, 0.02, 0.04, 0.1)   # the last Euler level of 50 steps, and three above it


def region_collapse(model, early, lab: MemLab, prompt: str, level: float, n: int = 4, seed: int = 0) -> dict:
    "Mean σ²κ of each branch on the constraint, the memorized region and the rest, at `prompt`'s images noised to s."
    t = level * model.schedule.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    a, s = model.schedule.alpha(t), model.schedule.sigma(t)
    x0 = torch.stack([lab.render(prompt, g) for _ in range(n)])
    xt = a * x0 + s * torch.randn(x0.shape, generator=g)
    frame, m = lab.constraint_mask, lab.mask(prompt)
    out = {}
    for name, (mdl, cond) in dict(cond=(model, prompt), uncond=(model, ""), checkpoint=(early, prompt)).items():
        k, _ = coordinate_curvature(mdl.eps_fn(t, mdl.encode([cond] * n)), xt, s, n_probes=16, probe_seed=0)
        k = (k * s**2).mean(1)
        rest = ~m & ~frame
        out[name] = dict(constraint=k[:, frame].mean().item(), memorized=k[:, m].mean().item() if m.any() else None,
                         rest=k[:, rest].mean().item() if rest.any() else None)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase1-steps", type=int, default=300)
    p.add_argument("--phase2-steps", type=int, default=300)
    p.add_argument("--run", help="run folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    run = args.run or tempfile.mkdtemp()
    start = time.perf_counter()
    res = train_memlab(run, phase1_steps=args.phase1_steps, phase2_steps=args.phase2_steps, family="flow")
    print(f"pilot: {args.phase1_steps} + {args.phase2_steps} steps in {time.perf_counter() - start:.0f} s")
    model, early = load_model(res["final"], checkpoint=res["early"])
    lab = MemLab()
    pd.set_option("display.width", 160)
    for level in LEVELS:
        rows = {(q, b): r for q in lab.memorized + ["a red circle"]
                for b, r in region_collapse(model, early, lab, q, level).items()}
        print(f"\nσ²κ at noise level s = {level}")
        print(pd.DataFrame(rows).T.astype(float).round(3).to_string())


if __name__ == "__main__":
    main()
