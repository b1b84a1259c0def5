"""Faster maps, measured (a benchmark, not a test): estimators against the exact diagonal, and samplers against the reference.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tests/bench_estimators.py [--seeds 8] [--out bench.csv]

Everything is measured side by side in one run, on one thread (about 15 minutes on an idle core).

1. Estimators, at t=1 of DDIM-50 generations: for each estimator and budget K, the Jacobian products taken (as
   `count_products` counts them), seconds, the relative error ||est - exact|| / ||exact|| of the conditional curvature and of
   the cond - uncond difference against the exact diagonal (2 template samples on the bundled MemLab UNet, 2 samples on a tiny
   SD-architecture UNet), the share of coordinates whose difference error is within 2 reported standard errors, and the TV IoU
   of the dh_uncond map (MemLab's templated prompts x the first 2 seeds, the paper's reference protocol).
2. Samplers: for DDIM and DPM-Solver++ at several step counts, with the reference estimator (Hutchinson, K=16) and a cheap one,
   the seconds per map (sampling + probes, cond and uncond branches) and the TV IoU of dh_uncond, ds_uncond and the free
   trajectory maps.
3. What batching and precision buy: K=16 probes of 4 samples in one call against one call per sample; both branches in one
   UNet batch against one pull-back per branch; the UNet in bfloat16 against float32 (seconds, and the change of the
   difference estimate relative to its own probe noise).

It ends with the two figures of issue 14: P1 (error on the difference at the same products as K=16 Hutchinson) and P2 (the
fastest procedure within 0.02 TV IoU of the reference DDIM 50 + K=16, and its speed-up).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from memcurv.curvature import coordinate_curvature, count_products, eps_stack
from memcurv.memlab.demo import load_memlab
from memcurv.evaluate.prepare import method_maps
from memcurv.evaluate.reference import reference_metrics
from memcurv.models.fixtures import make_tiny_pipeline
from memcurv.groundtruth import with_truth
from memcurv.memlab.truth import memlab_truth
from memcurv.maps import maps_settings, measure_curvature, plan_maps, to_dataset, trajectory_recorder
from memcurv.memlab.data import MemLab
from memcurv.models.sd import StableDiffusionModel
from memcurv.sampling import sample

BUDGETS = (4, 8, 12, 16, 27, 36, 48, 64)


def configs(channels: int) -> list[tuple[str, dict]]:
    "(estimator, options) of every estimator at every budget it fits (probing needs a multiple of its colour count)."
    out = []
    for k in BUDGETS:
        if k in (4, 8, 16, 64): out += [("hutchinson", dict(n_probes=k)), ("diagpp", dict(n_probes=k))]
        else: out.append(("hutchinson", dict(n_probes=k)))
        for d, how in ((2, "shared"), (2, "shifted"), (4, "shifted"), (6, "shifted"), (2, "split"), (3, "split"), (4, "split")):
            colours = d * d * (channels if how == "split" else 1)
            if k % colours == 0 and not (how == "shifted" and channels > 4): out.append(("probing", dict(n_probes=k, distance=d, channels=how)))
    return out


def label(est: str, opts: dict) -> str:
    if est != "probing": return est
    return f"probing d={opts['distance']} {opts.get('channels', 'shifted')}"


def accuracy(model, x, t, prompt, channels) -> list[dict]:
    "Every estimator's error on one latent against the exact diagonal of both branches."
    sigma = model.schedule.sigma(t)
    f_c, f_u = model.eps_fn(t, model.encode([prompt])), model.eps_fn(t, model.encode([""]))
    both = eps_stack(f_c, f_u)
    exact, _ = coordinate_curvature(both, x, sigma, estimator="exact", chunk_size=64, contrasts=[(0, 1)])
    rows = []
    for est, opts in configs(channels):
        with count_products() as n:
            start = time.perf_counter()
            val, se = coordinate_curvature(both, x, sigma, estimator=est, probe_seed=0, contrasts=[(0, 1)], **opts)
            seconds = time.perf_counter() - start
        err = lambda i: float((val[i] - exact[i]).norm() / exact[i].norm())
        rows.append(dict(estimator=label(est, opts), K=opts["n_probes"], products=n.products, seconds=seconds, err_cond=err(0),
                         err_diff=err(2), within_2se=float(((val[2] - exact[2]).abs() <= 2 * se[2]).float().mean())))
    return rows


def tv_iou(ds) -> dict:
    "Best TV IoU (reference protocol) of each map of a templated-only Dataset."
    maps = method_maps(ds)
    masks = ds.gt_mask.values.astype(bool)
    return {m: reference_metrics(maps.sel(map=m).values, masks)["iou"] for m in maps.map.values if m != "all-ones"}


def run_maps(model, lab, seeds, sampler, steps, estimators) -> list[dict]:
    "Sample the templated prompts once with `sampler`, then measure each estimator on the same latents: seconds per map and TV IoU."
    n = len(lab.templated) * len(seeds)
    record, trajectory = trajectory_recorder(model, n, steps)
    start = time.perf_counter()
    s = sample(model, lab.templated, seeds, steps=steps, guidance=4.0, sampler=sampler, progress=False, observers=[record])
    sampling = time.perf_counter() - start
    rows = []
    for est, opts in estimators:
        with count_products() as products:
            plan = plan_maps(model, maps_settings("reference", sampler=sampler, steps=steps, estimator=est, guidance=4.0,
                                                  baselines=("uncond",), **opts))
            m = measure_curvature(model, s, plan, progress=False)
        ds = to_dataset(s, m, ["cond", "uncond"], ["uncond"], model.schedule, {}).assign(trajectory(sampling))
        iou = tv_iou(with_truth(ds, memlab_truth(lab)))
        rows.append(dict(sampler=sampler, steps=steps, estimator=label(est, opts), K=opts["n_probes"],
                         products_per_map=products.products / n, seconds_per_map=(sampling + m["seconds"]["curvature"]) / n,
                         seconds_sampling_per_map=sampling / n, iou_dh_uncond=iou["dh_uncond"], iou_ds_uncond=iou["ds_uncond"],
                         **{f"iou_{k}": v for k, v in iou.items() if k.startswith("ds_uncond_last")}))
    return rows


def batching_and_precision(lab, seeds) -> pd.DataFrame:
    "Seconds of K=16 Hutchinson on the difference for 4 MemLab samples, batched or not, and in bfloat16."
    from memcurv.memlab.demo import MEMLAB_DIR
    rows = []
    for dtype in ("fp32", "bf16"):
        model = StableDiffusionModel(MEMLAB_DIR / "final", dtype=dtype)
        s = sample(model, lab.templated, seeds[:2], steps=50, guidance=4.0, progress=False)
        x, t = s.latents[:, 0], s.timesteps[0]
        sigma = model.schedule.sigma(t)
        cond, unc = model.encode(s.prompts), model.encode([""] * len(s.prompts))
        f_c, f_u = model.eps_fn(t, cond), model.eps_fn(t, unc)
        def one_call():
            return coordinate_curvature(eps_stack(f_c, f_u), x, sigma, n_probes=16, probe_seed=list(range(len(x))), contrasts=[(0, 1)])[0][2]
        def per_sample():
            return torch.cat([coordinate_curvature(eps_stack(model.eps_fn(t, cond[i:i + 1]), model.eps_fn(t, unc[i:i + 1])), x[i:i + 1], sigma,
                                                   n_probes=16, probe_seed=[i], contrasts=[(0, 1)])[0][2] for i in range(len(x))])
        def branches_together():
            # both branches as one UNet batch: the latents repeated, the conditions stacked; J^T v of each half is its branch's
            both = model.eps_fn(t, torch.cat([cond, unc]))
            diff = lambda z: (lambda e: e[:len(z) // 2] - e[len(z) // 2:])(both(z))
            g = lambda z: diff(torch.cat([z, z]))
            return coordinate_curvature(g, x, sigma, n_probes=16, probe_seed=list(range(len(x))))[0]
        if dtype == "fp32":   # the yardstick: how far another probe seed moves the float32 estimate
            other = coordinate_curvature(eps_stack(f_c, f_u), x, sigma, n_probes=16, probe_seed=[99] * len(x), contrasts=[(0, 1)])[0][2]
            base, noise = one_call(), float((other - one_call()).norm())
        for name, fn in (("per sample, one pull-back per branch", per_sample), ("samples batched", one_call),
                         ("samples and branches batched", branches_together)):
            fn()   # warm up
            start = time.perf_counter(); est = fn(); seconds = time.perf_counter() - start
            rows.append(dict(dtype=dtype, probes=name, seconds=seconds, estimate=est))
    return pd.DataFrame([dict(dtype=r["dtype"], probes=r["probes"], seconds=r["seconds"],
                              change_vs_probe_noise=float((r["estimate"] - base).norm()) / noise) for r in rows])


def estimator_table(model, lab, seeds) -> pd.DataFrame:
    "Part 1: accuracy on two template samples (MemLab) and two tiny-SD samples against the exact diagonal; IoU on the TV set."
    acc = []
    s = sample(model, lab.templated, [0], steps=50, guidance=4.0, progress=False)
    for i, prompt in enumerate(s.prompts):
        acc += [dict(unet="MemLab 3x32x32", sample=i, **r) for r in accuracy(model, s.latents[i:i + 1, 0], s.timesteps[0], prompt, 3)]
    tiny = StableDiffusionModel(make_tiny_pipeline(Path(tempfile.mkdtemp()) / "sd", latent_size=16))
    st = sample(tiny, ["a photo", "a drawing"], [0], steps=50, guidance=7.5, progress=False)
    for i, prompt in enumerate(st.prompts):
        acc += [dict(unet="tiny SD 4x16x16", sample=i, **r) for r in accuracy(tiny, st.latents[i:i + 1, 0], st.timesteps[0], prompt, 4)]
    acc = pd.DataFrame(acc).groupby(["unet", "estimator", "K"], sort=False).mean(numeric_only=True).drop(columns="sample").reset_index()
    ious = pd.DataFrame(run_maps(model, lab, seeds[:2], "ddim", 50, configs(3)))   # fewer seeds: every configuration is probed
    return acc.merge(ious[["estimator", "K", "iou_dh_uncond"]].assign(unet="MemLab 3x32x32"), on=["unet", "estimator", "K"], how="left")


def sampler_table(model, lab, seeds) -> pd.DataFrame:
    "Part 2: the reference estimator and cheap ones, after DDIM and DPM-Solver++ at several step counts."
    cheap = [("hutchinson", dict(n_probes=16)), ("hutchinson", dict(n_probes=4)), ("probing", dict(n_probes=4, distance=2)),
             ("probing", dict(n_probes=16, distance=4))]
    return pd.DataFrame([r for sampler, steps in (("ddim", 50), ("ddim", 25), ("ddim", 10), ("dpm++", 25), ("dpm++", 10), ("dpm++", 5))
                         for r in run_maps(model, lab, seeds, sampler, steps, cheap)])


def p1(table: pd.DataFrame):
    mem = table[table.unet == "MemLab 3x32x32"].set_index(["estimator", "K"])
    ref_err = mem.loc[("hutchinson", 16), "err_diff"]
    at16 = mem.xs(16, level="K").sort_values("err_diff")
    print(f"\nP1: at 16 products, Hutchinson's error on the difference is {ref_err:.4f}; the best estimator at 16 is {at16.index[0]} "
          f"with {at16.err_diff.iloc[0]:.4f} ({ref_err / at16.err_diff.iloc[0]:.2f}x lower; target 3x)")
    for k in (36, 48, 64):
        rows = mem.xs(k, level="K").sort_values("err_diff")
        hutch = mem.loc[("hutchinson", k), "err_diff"]
        print(f"    at {k} products: best {rows.index[0]} {rows.err_diff.iloc[0]:.4f} against Hutchinson's {hutch:.4f} "
              f"({hutch / rows.err_diff.iloc[0]:.2f}x) and Hutchinson-16's {ref_err:.4f} ({ref_err / rows.err_diff.iloc[0]:.2f}x)")


def p2(samplers: pd.DataFrame):
    ref = samplers[(samplers.sampler == "ddim") & (samplers.steps == 50) & (samplers.estimator == "hutchinson") & (samplers.K == 16)].iloc[0]
    fastest = samplers[samplers.iou_dh_uncond >= ref.iou_dh_uncond - 0.02].sort_values("seconds_per_map").iloc[0]
    print(f"P2: reference DDIM 50 + Hutchinson 16: {ref.seconds_per_map:.3f} s per map, TV IoU {ref.iou_dh_uncond:.3f}; fastest within 0.02: "
          f"{fastest.sampler} {fastest.steps} + {fastest.estimator} K={fastest.K}: {fastest.seconds_per_map:.3f} s per map, TV IoU "
          f"{fastest.iou_dh_uncond:.3f}: {ref.seconds_per_map / fastest.seconds_per_map:.1f}x faster (target 5x)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8, help="seeds per templated prompt for the IoU columns")
    p.add_argument("--out", help="also write the tables as CSV files with this prefix")
    p.add_argument("--parts", default="123", help="which parts to run (1: estimators, 2: samplers, 3: batching and precision)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    lab, (model, _) = MemLab(), load_memlab()
    seeds = list(range(args.seeds))
    parts = {"1": ("Estimators (t=1; errors: mean of 2 samples per UNet; IoU: TV, reference protocol)", estimator_table, p1),
             "2": (f"Samplers (TV: {len(lab.templated)} prompts x {len(seeds)} seeds; cond + uncond branches; one thread)", sampler_table, p2),
             "3": ("Batching and precision (Hutchinson K=16, difference; 4 MemLab samples; change relative to another probe seed's)",
                   lambda model, lab, seeds: batching_and_precision(lab, seeds), None)}
    tables = {k: parts[k][1](model, lab, seeds) for k in args.parts}
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 200):
        for k, table in tables.items():
            print(f"\n## {parts[k][0]}\n")
            print(table.round(4).to_string(index=False))
            if args.out: table.to_csv(f"{args.out}-part{k}.csv", index=False)
    for k, table in tables.items():
        if parts[k][2]: parts[k][2](table)


if __name__ == "__main__":
    main()
