"""Update latency of the explorers on a 100-sample MemLab dataset opened lazily from zarr (a benchmark, not a test).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tests/bench_widgets.py [--zarr PATH] [--changes 8]

Builds the dataset on first use (9 MemLab prompts x 12 seeds, first 100 samples; 10 DDIM steps, 6 captured timesteps, both
baselines, Hutchinson K=4: 5 to 10 minutes on one core) and reuses it afterwards. For each control it times the Python side of a
change — reading the slices, computing the mask and IoU, and preparing the figure messages — with the slice cache off (every
change reads zarr) and on (the default). It then checks the dataset is still dask-backed and reports how much dask computed.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dask.callbacks import Callback

N_SAMPLES = 100


def build(path: Path) -> None:
    from memcurv.memlab.demo import load_memlab
    from memcurv.groundtruth import with_truth
    from memcurv.memlab.truth import memlab_truth
    from memcurv.maps import curvature_maps
    from memcurv.schema import save_maps
    from memcurv.memlab.data import MemLab
    lab, (model, early) = MemLab(), load_memlab()
    start = time.time()
    ds = curvature_maps(model, lab.prompts, seeds=range(12), checkpoint=early, steps=10, guidance=4.0,
                        capture_steps=(0, 2, 4, 6, 8, 9), procedure="reference", n_probes=4).isel(sample=slice(N_SAMPLES))
    ds = with_truth(ds, memlab_truth(lab))
    save_maps(ds, path)
    print(f"built {path} in {time.time() - start:.0f} s")


class Materialised(Callback):
    "Counts the bytes of every array dask computes (task results, intermediate ones included)."
    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def _posttask(self, key, result, dsk, state, id):
        self.nbytes += getattr(result, "nbytes", 0)


def timed(widget, values) -> list[float]:
    "Seconds each assignment of `values` to `widget.value` takes (the explorer redraws synchronously)."
    out = []
    for v in values:
        start = time.perf_counter()
        widget.value = v
        out.append(time.perf_counter() - start)
    return out


def changes(options, current, n: int) -> list:
    "`n` values cycling through `options`, never repeating the value just before."
    cycle = [o for o in options if o != current] + [current]
    return list(itertools.islice(itertools.cycle(cycle), n))


def explorer_latencies(ds, cache_size: int, n: int) -> dict[str, list[float]]:
    from memcurv.widgets import CurvatureExplorer
    rng = np.random.default_rng(0)
    ex = CurvatureExplorer(ds, cache_size=cache_size)
    opts = lambda w: [o[1] if isinstance(o, tuple) else o for o in w.options]
    out = {"sample": timed(ex.sample, [int(s) for s in rng.choice(np.arange(1, ds.sizes["sample"]), n, replace=False)]),
           "timestep": timed(ex.timestep, changes(opts(ex.timestep), ex.timestep.value, n)),
           "channel": timed(ex.channel, changes(opts(ex.channel), ex.channel.value, n)),
           "quantity": timed(ex.quantity, changes(opts(ex.quantity), ex.quantity.value, n)),
           "baseline": timed(ex.baseline, changes(opts(ex.baseline), ex.baseline.value, n)),
           "threshold": timed(ex.threshold, [round(float(v), 2) for v in rng.uniform(0.05, 0.95, n)])}
    clicks = []
    for y, x in rng.integers(0, ds.sizes["y"], (n, 2)):
        start = time.perf_counter()
        ex.figure._js2py_pointsCallback = dict(event_type="plotly_click", points=dict(
            xs=[int(x)], ys=[int(y)], point_indexes=[[int(y), int(x)]], trace_indexes=[2]))
        clicks.append(time.perf_counter() - start)
    out["pixel click"] = clicks
    return out


def comparison_latencies(ds, n: int) -> dict[str, list[float]]:
    from memcurv.widgets import MethodComparison
    rng = np.random.default_rng(1)
    cmp = MethodComparison(ds, cache_size=0)
    return {"comparison sample": timed(cmp.sample, [int(s) for s in rng.choice(np.arange(1, ds.sizes["sample"]), n, replace=False)]),
            "comparison timestep": timed(cmp.timestep, changes([o[1] for o in cmp.timestep.options], cmp.timestep.value, n))}


def report(title: str, lat: dict[str, list[float]]) -> None:
    print(f"\n{title}\n{'control':<22}{'median ms':>10}{'max ms':>10}{'changes':>9}")
    for k, v in lat.items():
        print(f"{k:<22}{1000 * statistics.median(v):>10.1f}{1000 * max(v):>10.1f}{len(v):>9}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zarr", type=Path, default=Path(tempfile.gettempdir()) / "memcurv-bench" / "memlab100.zarr")
    ap.add_argument("--changes", type=int, default=8, help="changes timed per control")
    args = ap.parse_args()
    if not args.zarr.exists(): build(args.zarr)
    from memcurv.schema import open_maps
    ds = open_maps(args.zarr, chunks={})
    if ds.sizes["sample"] != N_SAMPLES: raise SystemExit(f"{args.zarr} has {ds.sizes['sample']} samples, not {N_SAMPLES}: delete it.")
    total = sum(v.nbytes for v in ds.data_vars.values())
    print(f"{args.zarr}: {dict(ds.sizes)}, {total / 2**20:.1f} MiB of data variables")
    with Materialised() as counted:
        start = time.perf_counter()
        from memcurv.widgets import CurvatureExplorer
        CurvatureExplorer(ds)
        print(f"CurvatureExplorer(ds) built in {time.perf_counter() - start:.2f} s (first import of the widgets included)")
        report("CurvatureExplorer, slice cache off (every change reads zarr)", explorer_latencies(ds, 0, args.changes))
        report("CurvatureExplorer, slice cache on (default)", explorer_latencies(ds, 64, args.changes))
        report("MethodComparison, cache off", comparison_latencies(ds, args.changes))
    lazy = {k: type(v.data).__module__.split(".")[0] for k, v in ds.data_vars.items()}
    print(f"\nstill lazy after every change: {all(m == 'dask' for m in lazy.values())} ({lazy})")
    print(f"dask materialised {counted.nbytes / 2**20:.1f} MiB in all (every task result, chunks read included) "
          f"over all the changes above; the dataset holds {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
