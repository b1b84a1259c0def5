"""Throughput of a streaming run on this machine: samples per minute in this process, on 1 and on 2 dask workers (CPU).

Run: `OMP_NUM_THREADS=1 python tests/bench_runs.py [--samples 16] [--steps 10] [--n-probes 4]`. Each configuration is the
`memcurv maps` command a user types, run as a subprocess on a tiny random-weight pipeline. Two rates are printed: end to end
(start-up included: imports, cluster, one model load per worker) and steady (from the completion times the store records,
first to last finished sample), which is what a long run approaches. One torch thread per process, so the workers' scaling is
that of processes, not threads.
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
    args = p.parse_args()
    from memcurv.fixtures import make_tiny_pipeline
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = make_tiny_pipeline(Path(tmp) / "tiny-sd")
        prompts = [a for i in range(4) for a in ("--prompt", f"prompt {i}")]
        seeds = [str(s) for s in range(max(1, args.samples // 4))]
        print(f"{4 * len(seeds)} samples, {args.steps} steps, {args.n_probes} probes, tiny pipeline (8x8 latents); "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        print(f"{'configuration':<24}{'wall s':>8}{'samples/min end to end':>25}{'samples/min steady':>21}")
        for name, extra in [("this process", []), ("1 dask worker", ["--workers", "1"]), ("2 dask workers", ["--workers", "2"])]:
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


if __name__ == "__main__":
    main()
