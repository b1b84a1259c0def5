"""Estimators on every family, measured (a benchmark, not a test): the exact diagonal of each tiny fixture against
Hutchinson and coloured probing at equal products, and where the Jacobian's off-diagonal mass sits.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tests/bench_families.py [--seeds 2] [--probe-seeds 8]

For each family (SD 1.x, SD 2.x-v, SDXL, SD3, Flux, PixArt), `--seeds` generations of one prompt with the model's
reference sampler; at the captured (last) step:

1. the exact diagonal of the conditional and unconditional curvature (one-hot products) and their difference;
2. Hutchinson and coloured probing (distance 2, channels shifted / split) at 4, 8 and 16 products: the relative error
   ||est - exact|| / ||exact|| of the difference, averaged over `--probe-seeds` probe streams;
3. the full Jacobian of the conditional branch (these latents are tiny) and the share of its squared off-diagonal
   mass on the same pixel (other channels), the same 2×2 patch (the transformers' patch size), and everywhere else.

4. one map (a prompt, a seed, both branches) with `curvature_maps`' fast and reference procedures: the seconds of its
   sampling and of its curvature, on this CPU (the fixtures are tiny: the figures say what each procedure costs relative
   to the other, not what a real model costs).

It prints one table per measurement and the estimator with the least difference error at 4 products per family.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from memcurv.curvature import eps_stack, make_estimator
from memcurv.maps import curvature_maps
from memcurv.models.fixtures import TINY_FAMILIES, make_tiny
from memcurv.models.load import open_model
from memcurv.sampling import sample

PROMPT = "a photo of a cat"
BUDGETS = (4, 8, 16, 32)


def candidates(channels: int, k: int) -> list[tuple[str, dict]]:
    "(label, estimator options) of Hutchinson and the probing colourings that fit `k` products."
    out = [("hutchinson", dict(estimator="hutchinson"))]
    for how in ("shifted", "split"):
        colours = 4 * (channels if how == "split" else 1)
        if k % colours == 0: out.append((f"probing d2 {how}", dict(estimator="probing", distance=2, channels=how)))
    return out


def captured(model, seeds):
    "The model's reference generations of PROMPT: the captured latents, their timestep, and the branches' eps fns."
    d = model.defaults
    steps = min(int(d["steps"]), 10)   # the fixtures' noise at the last step, at a tenth of the CPU time
    s = sample(model, [PROMPT], seeds, steps=steps, guidance=d["guidance"], sampler=d["sampler"], progress=False)
    t = s.timesteps[-1]
    cond, uncond = model.encode([PROMPT] * len(seeds)), model.uncond(len(seeds))
    cond, uncond = model.with_guidance(cond, d["guidance"]), model.with_guidance(uncond, d["guidance"])
    return s.latents[:, -1], t, eps_stack(model.eps_fn(t, cond), model.eps_fn(t, uncond)), model.eps_fn(t, cond[:1])


def off_diagonal_shares(eps_fn, x) -> dict:
    "Shares of the squared off-diagonal Jacobian mass: same pixel, same 2×2 patch, elsewhere."
    shape = x.shape[1:]
    J = torch.autograd.functional.jacobian(lambda v: eps_fn(v.reshape(1, *shape)).reshape(-1), x.reshape(-1),
                                           vectorize=True).double()
    C, H, W = shape
    c, y, w = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    c, y, w = c.ravel(), y.ravel(), w.ravel()
    same_pixel = (y[:, None] == y[None]) & (w[:, None] == w[None])
    same_patch = (y[:, None] // 2 == y[None] // 2) & (w[:, None] // 2 == w[None] // 2)
    diag = np.eye(len(c), dtype=bool)
    sq = (J ** 2).numpy()
    off = sq[~diag].sum()
    return {"diagonal share of all": sq[diag].sum() / sq.sum(),
            "same pixel": sq[same_pixel & ~diag].sum() / off,
            "same patch, other pixel": sq[same_patch & ~same_pixel].sum() / off,
            "elsewhere": sq[~same_patch].sum() / off}


def bench_family(family: str, folder: Path, seeds, probe_seeds: int) -> tuple[list[dict], dict]:
    model = open_model(make_tiny(family, folder / family))
    torch.manual_seed(0)
    xs, t, fns, cond_fn = captured(model, seeds)
    sigma = model.schedule.sigma(t)
    shape = tuple(xs.shape[1:])
    t0 = time.perf_counter()
    exact, _ = make_estimator("exact", 1, shape)(fns, xs, sigma, contrasts=[(0, 1)])
    exact_seconds = time.perf_counter() - t0
    truth = exact[2]
    rows = [dict(family=family, estimator="exact", products=int(np.prod(shape)), rel_error=0.0,
                 seconds=exact_seconds)]
    for k in BUDGETS:
        for label, opts in candidates(shape[0], k):
            est = make_estimator(opts.pop("estimator"), k, shape, **opts)
            errs, t0 = [], time.perf_counter()
            for p in range(probe_seeds):
                got, _ = est(fns, xs, sigma, probe_seed=[1000 * p + i for i in range(len(xs))], contrasts=[(0, 1)])
                errs.append(float((got[2] - truth).norm() / truth.norm()))
            rows.append(dict(family=family, estimator=label, products=k, rel_error=float(np.mean(errs)),
                             seconds=(time.perf_counter() - t0) / probe_seeds))
    shares = dict(family=family, latent=f"{shape[0]}×{shape[1]}×{shape[2]}", noise_level=round(float(sigma), 3),
                  **off_diagonal_shares(cond_fn, xs[:1]))
    return rows, shares


def map_seconds(family: str, folder: Path) -> list[dict]:
    "Seconds of one map (sampling, curvature) with each procedure, on the family's fixture."
    model = open_model(folder).load()
    curvature_maps(model, [PROMPT], [0], steps=1, progress=False)   # warm-up: the first call's one-off costs
    out = []
    for procedure in ("fast", "reference"):
        ds = curvature_maps(model, [PROMPT], [0], procedure=procedure, progress=False)
        out.append(dict(family=family, procedure=procedure, sampler=ds.attrs["sampler"], steps=ds.attrs["steps"],
                        estimator=ds.attrs["estimator"], products=ds.attrs["n_probes"],
                        sampling=ds.attrs["seconds_sampling"], curvature=ds.attrs["seconds_curvature"]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--probe-seeds", type=int, default=8)
    p.add_argument("--families", nargs="*", default=list(TINY_FAMILIES))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, shares, seconds = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            r, s = bench_family(family, Path(tmp), list(range(args.seeds)), args.probe_seeds)
            rows += r; shares.append(s)
            seconds += map_seconds(family, Path(tmp) / family)
            print(f"{family}: done", flush=True)
    errors = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print("\nRelative error of the cond - uncond difference at the captured step, by products (mean over probe seeds)")
    print(errors.pivot_table(index=["family", "estimator"], columns="products", values="rel_error").round(3))
    print("\nWhere the conditional Jacobian's squared off-diagonal mass sits")
    print(pd.DataFrame(shares).set_index("family").round(3))
    at4 = errors[errors.products == 4].sort_values("rel_error").groupby("family").head(1)
    print("\nLeast difference error at 4 products")
    print(at4[["family", "estimator", "rel_error"]].to_string(index=False))
    print("\nSeconds of one map (one prompt, one seed, cond and uncond branches) on this CPU, one thread")
    print(pd.DataFrame(seconds).set_index(["family", "procedure"]).round(2))


if __name__ == "__main__":
    main()
