"""Streaming runs (`memcurv maps --out X.zarr`) as users meet them: real subprocesses killed mid-run, real dask workers, real stores."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
# The run's own numbers; everything else in the record (when, which process, how long) differs from run to run by design.
VARYING = ("run_finished", "run_pid", "run_cost")
PROMPTS = ["a cat", "a dog", "a red house"]
SEEDS = [0, 1, 2, 3]   # 12 samples


# The `memcurv` command, run by this Python on this checkout.
MEMCURV = [sys.executable, "-c", "import sys; from memcurv.cli import main; sys.exit(main(sys.argv[1:]))"]


def command(pipeline, out, *extra, prompts=PROMPTS, seeds=SEEDS):
    "The `memcurv maps` command line of a small run, as a user types it."
    args = ["maps", pipeline, *[a for p in prompts for a in ("--prompt", p)], "--seeds", *seeds, "--steps", 3, "--n-probes", 4,
            "--out", out, *extra]
    return [*MEMCURV, *map(str, args)]


def environment():
    # One thread per process: two cores are shared; the subprocess imports this checkout's memcurv.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run(cmd, timeout=300):
    r = subprocess.run(cmd, capture_output=True, text=True, env=environment(), timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def record(store, name="run_done"):
    "A record variable of a store being written by another process (None while it is not laid out yet)."
    try: return xr.open_zarr(store, chunks=None)[name].values
    except (FileNotFoundError, KeyError, OSError, ValueError): return None


def wait_until(proc, store, condition, timeout=240):
    start = time.time()
    while time.time() - start < timeout:
        done = record(store)
        if done is not None and condition(done): return done
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise TimeoutError(f"{store}: condition not met in {timeout} s")


def assert_same_maps(a, b):
    "Bitwise equal maps, coordinates and completion (NaN where both have NaN); only the varying part of the record may differ."
    a, b = xr.open_zarr(a, chunks=None), xr.open_zarr(b, chunks=None)
    assert set(a.variables) == set(b.variables)
    for k in a.variables:
        if k in VARYING: continue
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k].values, b[k].values, equal_nan=a[k].dtype.kind == "f"), k
    assert a.run_done.values.all()


def checksum(folder):
    return hashlib.sha256(b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes()
                                   for p in sorted(Path(folder).rglob("*")) if p.is_file())).hexdigest()


@pytest.fixture(scope="module")
def reference(tiny_sd, tmp_path_factory):
    "A run never interrupted: this process, one sample per task."
    out = tmp_path_factory.mktemp("reference") / "ref.zarr"
    run(command(tiny_sd, out, "--batch-size", 1))
    return out


def evaluate_unfinished(store, tmp_path, n_finished):
    "`memcurv evaluate` of an interrupted run (a copy): it scores the finished samples and says so."
    from memcurv.groundtruth import write_webster
    mask = np.zeros((64, 64), bool); mask[:32] = True
    truth = write_webster(tmp_path / "webster", PROMPTS, ["TV", "MV", "N"], [SEEDS] * 3, [mask], [[0], [], []])
    shutil.copytree(store, tmp_path / "eval" / "maps.zarr")
    r = run([*MEMCURV, "evaluate", tmp_path / "eval", "--ground-truth", truth, "--protocol", "reference"])
    assert f"evaluating its {n_finished} finished samples of {len(PROMPTS) * len(SEEDS)}" in r.stderr
    table = pd.read_csv(tmp_path / "eval" / "evaluation.csv")
    assert (table.n_skipped.fillna(0) == 0).all() and "dh_uncond" in set(table.method)


def test_kill_drill(tiny_sd, reference, tmp_path):
    "SIGKILL mid-run, the same command again: the store of a run never interrupted, and no finished sample computed twice."
    out = tmp_path / "run.zarr"
    proc = subprocess.Popen(command(tiny_sd, out, "--batch-size", 1), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try: wait_until(proc, out, lambda done: done.sum() >= 3)
    finally: proc.send_signal(signal.SIGKILL); proc.wait()
    before = xr.open_zarr(out, chunks=None).load()
    finished = before.run_done.values
    assert 3 <= finished.sum() < len(finished)
    assert "run_complete" not in before.attrs
    evaluate_unfinished(out, tmp_path, int(finished.sum()))
    run(command(tiny_sd, out, "--batch-size", 1))
    after = xr.open_zarr(out, chunks=None)
    assert_same_maps(out, reference)
    assert (after.run_writes.values == 1).all()   # nothing written twice: the finished samples were skipped ...
    np.testing.assert_array_equal(after.run_finished.values[finished], before.run_finished.values[finished])   # ... and kept
    assert (after.run_finished.values[~finished] > np.nanmax(before.run_finished.values)).all()


def test_two_workers_one_killed_and_batch_size_do_not_change_the_store(tiny_sd, reference, tmp_path):
    """Tasks of 4 samples in this process, then tasks of 2 on two dask workers, one of them SIGKILLed mid-run: each run completes
    with the store of the reference (one process, tasks of 1), to the bit; the killed worker's batch is done elsewhere."""
    run(command(tiny_sd, tmp_path / "b4.zarr", "--batch-size", 4))
    assert_same_maps(tmp_path / "b4.zarr", reference)
    out = tmp_path / "w2.zarr"
    proc = subprocess.Popen(command(tiny_sd, out, "--batch-size", 2, "--workers", 2), env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        done = wait_until(proc, out, lambda done: done.sum() >= 2)
        worker = int(record(out, "run_pid")[np.flatnonzero(done)[0]])
        assert worker != proc.pid
        os.kill(worker, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None: proc.kill(); proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert b"2 dask workers; dashboard: http" in stdout
    assert_same_maps(out, reference)
    store = xr.open_zarr(out, chunks=None)
    assert (store.run_writes.values == 1).all()
    assert len(set(store.run_pid.values.tolist()) - {worker}) >= 1 and proc.pid not in store.run_pid.values


def test_a_resume_with_other_parameters_is_refused_untouched(tiny_sd, reference, tmp_path):
    out = tmp_path / "run.zarr"
    shutil.copytree(reference, out)
    before = checksum(out)
    r = subprocess.run(command(tiny_sd, out, "--n-probes", 8, "--guidance", 3), capture_output=True, text=True, env=environment(), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    for message in ("n_probes: 4 in the store, 8 now", "guidance: 7.5 in the store, 3.0 now", "--overwrite"): assert message in r.stderr
    assert checksum(out) == before


def peak_rss(cmd) -> tuple[float, float]:
    "(MiB after importing memcurv, peak MiB) of the command's own process, from its kernel accounting (os.wait4)."
    proc = subprocess.Popen(cmd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return float(out.split()[0]), usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_the_number_of_samples(tiny_sd, tmp_path):
    "4x the samples, the same peak RSS within 20%: a run holds one batch, not the run (here the maps are small; this guards the machinery)."
    measured = {}
    for n in (2, 8):
        cmd = command(tiny_sd, tmp_path / f"{n}.zarr", "--batch-size", 1, prompts=PROMPTS[:2], seeds=range(n // 2))
        # The same command, printing the RSS once memcurv is imported, so the growth during the run can be told from the imports.
        cmd[2] = ("import resource, sys; import memcurv.runs; from memcurv.cli import main; "
                  "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.stdout.flush(); main(sys.argv[1:])")
        measured[n] = peak_rss(cmd)
    (base2, peak2), (base8, peak8) = measured[2], measured[8]
    assert peak8 <= 1.2 * peak2, measured
    assert peak8 - base8 <= 1.2 * (peak2 - base2) + 16, measured   # the run's own growth: flat too (16 MiB allocator slack)
