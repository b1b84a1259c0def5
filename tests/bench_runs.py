"""Throughput of a streaming run on this machine: samples per minute in this process, on 1 and on 2 dask workers (CPU).

Run: `OMP_NUM_THREADS=1 python tests/bench_runs.py [--samples 16] [--steps 10] [--n-probes 4] [--evaluate-samples 2000]`. Each configuration is the
`memcurv maps` command a user types, run as a subprocess on a tiny random-weight pipeline. Two rates are printed: end to end
(start-up included: imports, cluster, one model load per worker) and steady (from the completion times the store records,
first to last finished sample), which is what a long run approaches. One torch thread per process, so the workers' scaling is
that of processes, not threads.

`--evaluate-samples N` also measures `memcurv evaluate` on a run store of N samples (one computed sample of a 32x32-latent
tiny pipeline, tiled: the numbers do not matter, the sizes do): peak RSS and seconds of the command, which opens the store
lazily, beside the same evaluation of the store loaded whole first (what `memcurv evaluate` did before streaming runs).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n-probes", type=int, default=4)
    p.add_argument("--evaluate-samples", type=int, default=0, help="also benchmark the evaluation of a store this large")
    p.add_argument("--skip-runs", action="store_true", help="only the evaluation benchmark")
    args = p.parse_args()
    from memcurv.models.fixtures import make_tiny_pipeline
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = make_tiny_pipeline(Path(tmp) / "tiny-sd")
        prompts = [a for i in range(4) for a in ("--prompt", f"prompt {i}")]
        seeds = [str(s) for s in range(max(1, args.samples // 4))]
        print(f"{4 * len(seeds)} samples, {args.steps} steps, {args.n_probes} probes, tiny pipeline (8x8 latents); "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        print(f"{'configuration':<24}{'wall s':>8}{'samples/min end to end':>25}{'samples/min steady':>21}")
        for name, extra in [] if args.skip_runs else [("this process", []), ("1 dask worker", ["--workers", "1"]), ("2 dask workers", ["--workers", "2"])]:
            out = Path(tmp) / f"{name.replace(' ', '-')}.zarr"
            cmd = [sys.executable, "-c", "import sys; from memcurv.cli import main; sys.exit(main(sys.argv[1:]))", "maps", str(pipe),
                   *prompts, "--seeds", *seeds, "--steps", str(args.steps), "--n-probes", str(args.n_probes), "--batch-size", "1",
                   "--out", str(out)]
            start = time.time()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            wall = time.time() - start
            finished = np.sort(xr.open_zarr(out, chunks=None).run_finished.values)
            n = len(finished)
            steady = (n - 1) / (finished[-1] - finished[0]) * 60
            print(f"{name:<24}{wall:>8.1f}{n / wall * 60:>25.1f}{steady:>21.1f}")
        if args.evaluate_samples: bench_evaluate(Path(tmp), args.evaluate_samples, env)


def synthetic_store(folder: Path, n: int) -> tuple[Path, Path]:
    "A finished run store of n samples (n/2 captions × 2 seeds) from one computed sample, tiled, and its Webster ground truth."
    import torch
    from memcurv.models.fixtures import make_tiny_pipeline
    from memcurv.groundtruth import write_webster
    from memcurv.models.load import load_model
    from memcurv.maps import maps_settings, plan_maps
    from memcurv.runs import compute_batch, create_store, finish_store, run_config, write_batch
    torch.set_num_threads(1)
    pipe = make_tiny_pipeline(folder / "tiny-sd-32", latent_size=32)
    model, _ = load_model(pipe)
    settings = maps_settings(steps=3, n_probes=4)
    config = run_config(pipe, settings)
    one = compute_batch(model, plan_maps(model, settings), ["caption 0"], [0])
    captions = [f"caption {i}" for i in range(n // 2)]
    prompts, seeds = [c for c in captions for _ in (0, 1)], [s for _ in captions for s in (0, 1)]
    store = create_store(folder / "eval" / "maps.zarr", one, prompts, seeds, config)
    block = 100
    for start in range(0, n, block):
        idx = list(range(start, min(n, start + block)))
        tiled = xr.concat([one] * len(idx), "sample").assign_coords(prompt=("sample", [prompts[i] for i in idx]),
                                                                     seed=("sample", [seeds[i] for i in idx]))
        write_batch(store, idx, tiled)
    finish_store(store)
    mask = np.zeros((64, 64), bool); mask[:32] = True
    labels = ["TV" if i % 2 == 0 else "N" for i in range(len(captions))]
    truth = write_webster(folder / "webster", captions, labels, [[0, 1]] * len(captions), [mask],
                          [[0] if l == "TV" else [] for l in labels])
    return store, truth


def bench_evaluate(folder: Path, n: int, env: dict):
    start = time.time()
    store, truth = synthetic_store(folder, n)
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
    print(f"\nmemcurv evaluate --protocol reference on {n} samples ({size:.0f} MiB store, 32x32 latents, 64x64 images; "
          f"built in {time.time() - start:.0f} s)")
    print(f"{'store opened':<24}{'seconds':>8}{'peak RSS MiB':>14}")
    eager = ("import sys; from pathlib import Path; import memcurv.evaluate.table as m; opened = m.open_maps; "
             "m.open_maps = lambda path, chunks=None: opened(path).load(); "   # the store loaded whole, as before
             "from memcurv.cli import main; sys.exit(main(sys.argv[1:]))")
    for name, code in [("maps at one timestep (now)", None), ("whole store (before)", eager)]:
        cmd = [sys.executable, "-c", code or "import sys; from memcurv.cli import main; sys.exit(main(sys.argv[1:]))", "evaluate",
               str(store.parent), "--ground-truth", str(truth), "--protocol", "reference"]
        t = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-2000:]
        print(f"{name:<24}{time.time() - t:>8.1f}{usage.ru_maxrss / 1024:>14.0f}")


if __name__ == "__main__":
    main()
