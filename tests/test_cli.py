"""The `memcurv` console script, run as a real subprocess on tiny pipeline folders."""
import json
import subprocess

import xarray as xr

from memcurv.models.fixtures import make_tiny_pipeline
from memcurv.schema import open_maps


def memcurv(*args, cwd=None):
    return subprocess.run(["memcurv", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_maps_with_checkpoint_to_netcdf(tiny_sd, tiny_sd_early, tmp_path):
    out = tmp_path / "maps.nc"
    r = memcurv("maps", tiny_sd, "--prompt", "a photo", "--prompt", "a cat", "--seeds", 0, 1, "--checkpoint", tiny_sd_early,
                "--steps", 4, "--n-probes", 4, "--capture-steps", 0, -1, "--out", out)
    assert r.returncode == 0, r.stderr
    ds = open_maps(out)
    assert list(ds.branch.values) == ["cond", "uncond", "checkpoint"]
    assert list(ds.baseline.values) == ["uncond", "checkpoint"]
    assert ds.sizes["sample"] == 4 and ds.sizes["timestep"] == 2
    assert list(ds.prompt.values) == ["a photo", "a photo", "a cat", "a cat"]
    assert ds.attrs["checkpoint"] == str(tiny_sd_early) and ds.attrs["model"] == str(tiny_sd)
    assert json.loads(ds.attrs["scheduler"])["num_train_timesteps"] == 1000
    assert not list(tmp_path.glob(".maps.nc.partial*"))


def test_v_prediction_to_zarr(tmp_path):
    folder = make_tiny_pipeline(tmp_path / "sd-v", prediction_type="v_prediction", vae=False)
    out = tmp_path / "maps.zarr"
    r = memcurv("maps", folder, "--prompt", "a photo", "--steps", 3, "--estimator", "fd", "--timesteps", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    ds = xr.open_zarr(out)
    assert ds.attrs["prediction_type"] == "v_prediction" and ds.attrs["estimator"] == "fd"
    assert int(ds.timestep[0]) == 1 and float(ds.curvature_stderr.max()) == 0.0


def test_errors_are_one_clear_line(tiny_sd, tmp_path):
    cases = [(["maps", tmp_path / "nowhere", "--prompt", "a"], "is not a folder"),
             (["maps", tiny_sd, "--prompt", "a", "--steps", 3, "--timesteps", 500], "not visited by this 3-step schedule"),
             (["maps", tiny_sd, "--prompt", "a", "--steps", 3, "--estimator", "probing", "--n-probes", 6], "needs n_probes a multiple of 4"),
             (["maps", tiny_sd, "--prompt", "a", "--steps", 3, "--out", tmp_path / "x.csv"], ".nc (netCDF) or .zarr")]
    for args, message in cases:
        r = memcurv(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "memcurv: error:" in r.stderr and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.csv").exists()


def test_own_model_with_peers_evaluated_against_webster_files(tiny_sd, tiny_sd_early, tmp_path):
    "A user's workflow: maps and peers of their own pipeline to zarr, then the evaluation against Webster-format ground truth."
    import numpy as np
    import pandas as pd
    from memcurv.groundtruth import write_webster
    captions = ["a tv caption", "an mv caption", "a plain caption", "another plain caption"]
    mask = np.zeros((64, 64), bool); mask[:32] = True
    gt = write_webster(tmp_path / "webster", captions, ["TV", "MV", "N", "N"], [[0, 1], [1], [], [2]], [mask], [[0], [], [], []])
    run = tmp_path / "run"
    r = memcurv("maps", tiny_sd, "--ground-truth", gt, "--checkpoint", tiny_sd_early, "--checkpoint-text", "own", "--steps", 4,
                "--n-probes", 4, "--peers", "--out", run / "maps.zarr")
    assert r.returncode == 0, r.stderr
    ds = open_maps(run / "maps.zarr")   # every caption with its own gen_seeds; seed 0 where Webster lists none
    assert list(ds.prompt.values) == [captions[0], captions[0], *captions[1:]] and list(ds.seed.values) == [0, 1, 1, 0, 2]
    assert ds.attrs["checkpoint_text"] == "own"
    r = memcurv("evaluate", run, "--ground-truth", gt)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(run / "evaluation.csv")
    methods = {"raw curvature", "dh_uncond", "ds_uncond", "ds_uncond_last1", "dh_checkpoint", "ds_checkpoint", "all-ones", "bright_ending",
               "bright_ending_score", "wen_norm", "anisotropy", "sharpness", "flipd_collapse", "flipd_collapse_uncond", "flipd_collapse_checkpoint"}
    assert set(table.method) == methods
    assert set(table.subset) == {"TV", "MV", "N", "all"}
    assert set(table.threshold_rule) == {"reference", "oracle_iou", "calibrated", "otsu", "none"}
    assert table.seconds.notna().all() and table.loc[table.method != "all-ones", "seconds"].gt(0).all()
    for rule in ("reference", "oracle_iou"):   # the template covers the top half: predicting everything gets IoU 1/2
        ones = table[(table.method == "all-ones") & (table.subset == "TV") & (table.threshold_rule == rule)].iloc[0]
        assert abs(ones.iou - 0.5) < 1e-9
    assert "reference TV iou" in r.stdout and "oracle_iou TV iou" in r.stdout
    r = memcurv("evaluate", run, "--ground-truth", gt, "--protocol", "reference")
    assert r.returncode == 0, r.stderr
    assert set(pd.read_csv(run / "evaluation.csv").threshold_rule) == {"reference", "none"}
    assert "reference all miou" in r.stdout and "oracle_iou" not in r.stdout


def test_prompts_from_a_published_list(tiny_sd, tmp_path):
    "`--prompts` reads NeMo's `;` CSV (after any --prompt); a malformed list is one clear line naming where."
    nemo = tmp_path / "nemo.csv"
    nemo.write_text(";Caption;URL;type;mean_sscd;max_sscd;Index\n0;a photo;https://a;VM;0.8;0.9;1\n"
                    "1;a cat;https://b;TM;0.3;0.4;2\n")
    out = tmp_path / "maps.nc"
    r = memcurv("maps", tiny_sd, "--prompt", "a mug", "--prompts", nemo, "--steps", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    assert list(open_maps(out).prompt.values) == ["a mug", "a photo", "a cat"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "a photo"}\n{"caption": \n')
    r = memcurv("maps", tiny_sd, "--prompts", bad, "--steps", 2, "--out", tmp_path / "no.nc")
    assert r.returncode == 2 and "bad.jsonl line 2: not valid JSON" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "no.nc").exists()
