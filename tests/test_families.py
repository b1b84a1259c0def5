"""Every model family end to end, on its tiny fixture, through the real command: `memcurv maps` with both baselines and
the peers, `memcurv evaluate`, the explorers; a `.zarr` run SIGKILLed and resumed; and the same maps from a pipeline
object, a folder and a hub id (the offline hub cache)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from memcurv.models.fixtures import TINY_FAMILIES, cache_as_hub, make_tiny
from memcurv.schema import open_maps
from test_runs import MEMCURV, assert_same_maps, environment, run, wait_until

FAMILIES = list(TINY_FAMILIES)
CROSS_ATTENTION = {"sd1", "sd2", "sdxl", "pixart"}   # SD3 and Flux attend jointly: no Bright Ending there
PROMPTS = ["a cat", "a red house"]
MAP_VARIABLES = ("curvature", "posterior_var", "curvature_diff", "score_diff_sq",
                 "ds_uncond_last1")
PEER_VARIABLES = ("wen_norm", "token_significance", "anisotropy", "sharpness", "flipd_lid", "flipd_collapse")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    "Each family's tiny pipeline folder and another seed of it, standing in for a less-trained checkpoint."
    root = tmp_path_factory.mktemp("families")
    return {f: (make_tiny(f, root / f), make_tiny(f, root / f"{f}-early", seed=1)) for f in FAMILIES}


def maps_command(pipeline, out, *extra, prompts=PROMPTS, seeds=(0, 1)):
    args = ["maps", pipeline, *[a for p in prompts for a in ("--prompt", p)], "--seeds", *seeds, "--steps", 3,
            "--out", out, *extra]
    return [*MEMCURV, *map(str, args)]


def webster(tmp_path, ds):
    "A Webster-style ground truth for the Dataset's prompts: the first one memorized (top half), the other not."
    from memcurv.groundtruth import write_webster
    mask = np.zeros((64, 64), bool); mask[:32] = True
    seeds = [sorted({int(s) for s in ds.seed.values})] * len(PROMPTS)
    return write_webster(tmp_path / "webster", PROMPTS, ["TV", "N"], seeds, [mask], [[0], []])


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_peers_evaluate_and_explorers(family, pipelines, tmp_path):
    "A complete Dataset (every map, both baselines, every peer defined there), scored, and opened by the explorers."
    from memcurv.widgets import CurvatureExplorer, MethodComparison
    final, early = pipelines[family]
    out = tmp_path / "run" / "maps.nc"
    run(maps_command(final, out, "--checkpoint", early, "--peers"))
    ds = open_maps(out).load()
    assert ds.attrs["family"] == family
    assert list(ds.branch.values) == ["cond", "uncond", "checkpoint"]
    assert list(ds.baseline.values) == ["uncond", "checkpoint"]
    for v in MAP_VARIABLES:
        assert np.isfinite(ds[v].values).all(), v
    assert "curvature_stderr" in ds   # NaN: one probing sweep (the fast procedure) has no standard error
    # token significance is NaN past a prompt's last token
    for v in PEER_VARIABLES:
        assert v in ds and not np.isinf(ds[v].values).any() and np.isfinite(ds[v].values).any(), v
    not_defined = json.loads(ds.attrs["not_defined"])
    if family in CROSS_ATTENTION:
        assert not not_defined and np.isfinite(ds.bright_ending.values).all()
    else:
        assert "bright_ending" in not_defined and "bright_ending" not in ds
    np.testing.assert_allclose(ds.noise_level.values, ds.sigma / (ds.alpha + ds.sigma))

    r = run([*MEMCURV, "evaluate", out.parent, "--ground-truth", webster(tmp_path, ds), "--protocol", "reference"])
    import pandas as pd
    table = pd.read_csv(out.parent / "evaluation.csv")
    scored = set(table.method[table.iou.notna()])
    assert {"dh_uncond", "dh_checkpoint", "ds_uncond", "raw curvature"} <= scored, scored
    assert "dh_uncond" in r.stdout
    if family not in CROSS_ATTENTION:
        note = table.note[table.method == "bright_ending"]
        assert len(note) == 1 and note.iloc[0].startswith("not defined for this family"), table.note.unique()
        assert "not defined for this family" in r.stdout

    if family in ("sd3", "flux"):   # flow matching: the captured timestep is a float, taken as the Dataset prints it
        at = str(ds.timestep.values[-1])
        r = run([*MEMCURV, "evaluate", out.parent, "--ground-truth", webster(tmp_path, ds), "--timestep", at])
        assert "dh_uncond" in r.stdout

    explorer, comparison = CurvatureExplorer(ds), MethodComparison(ds)
    assert explorer.children and comparison.children


@pytest.mark.parametrize("family", FAMILIES)
def test_a_killed_zarr_run_resumes_bitwise(family, pipelines, tmp_path):
    "SIGKILL after the first finished sample, the same command again: the store of a run never interrupted."
    final, _ = pipelines[family]
    reference, out = tmp_path / "reference.zarr", tmp_path / "run.zarr"
    run(maps_command(final, reference, "--batch-size", 1))
    proc = subprocess.Popen(maps_command(final, out, "--batch-size", 1), env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try: wait_until(proc, out, lambda done: done.sum() >= 1)
    finally: proc.send_signal(signal.SIGKILL); proc.wait()
    finished = xr.open_zarr(out, chunks=None).run_done.values
    assert 1 <= finished.sum() < len(finished)
    run(maps_command(final, out, "--batch-size", 1))
    assert_same_maps(out, reference)
    assert (xr.open_zarr(out, chunks=None).run_writes.values == 1).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_object_folder_and_hub_id_give_the_same_maps(family, pipelines, tmp_path):
    "A pipeline object in memory, its folder and its hub id (offline, from the hub cache): bitwise-identical maps."
    from diffusers import DiffusionPipeline
    from memcurv.runs import run_maps
    final, _ = pipelines[family]
    run(maps_command(final, tmp_path / "folder.nc", seeds=(0,)))
    repo = f"memcurv-tests/tiny-{family}"
    cache_as_hub(final, repo, tmp_path / "hub")
    env = {**environment(), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(maps_command(repo, tmp_path / "hub.nc", seeds=(0,)), capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the commands run: the same threads give the same bits
    try:
        pipe = DiffusionPipeline.from_pretrained(final)
        run_maps(pipe, PROMPTS, [0], tmp_path / "object.nc", steps=3, progress=False)
    finally: torch.set_num_threads(threads)
    folder, hub, obj = (open_maps(tmp_path / f"{k}.nc").load() for k in ("folder", "hub", "object"))
    for other in (hub, obj):
        for v in folder.data_vars:
            assert np.array_equal(folder[v].values, other[v].values, equal_nan=True), v
    assert "snapshots" in hub.attrs["model"] and obj.attrs["family"] == folder.attrs["family"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_mitigations(family, pipelines, tmp_path):
    """Localized mitigation (the report `memcurv mitigate` writes) changes nothing outside its mask; Wen's and
    Anisotropy's whole-image mitigations run on the family's own sampler."""
    from memcurv.mitigate import anisotropy_mitigation, anisotropy_threshold, mitigation_report, wen_mitigation
    from memcurv.models.load import load_model
    final, _ = pipelines[family]
    table = mitigation_report(final, ["a cat"], [0], tmp_path / "out")
    row = table.iloc[0]
    assert 0 < row.marked < 1 and row.change_outside == 0, row.to_dict()
    assert {"000_before.png", "000_after.png", "000_mask.png", "table.csv", "report.html"} <= {
        p.name for p in (tmp_path / "out").iterdir()}
    model, _ = load_model(final)
    wen, _ = wen_mitigation(model, "a cat", 0, iterations=2)
    threshold = anisotropy_threshold(model, ["a red house"], seeds=range(4))
    aniso, _ = anisotropy_mitigation(model, "a cat", 0, threshold=threshold)
    from PIL import Image
    size = Image.open(tmp_path / "out" / "000_before.png").size
    for img in (wen, aniso):   # the localized mitigation's image size, finite
        assert img.shape == (3, *size[::-1]) and torch.isfinite(img).all(), (img.shape, size)
