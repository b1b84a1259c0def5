"""MemLab end to end: a miniature training run feeds the curvature pipeline, and `memcurv demo` runs as a real subprocess."""
import re
import subprocess

import pandas as pd

from memcurv.maps import curvature_maps
from memcurv.schema import open_maps
from memcurv.memlab.data import MemLab
from memcurv.models.load import load_model
from memcurv.memlab.train import train_memlab


def test_miniature_training_feeds_the_maps(tmp_path):
    out = train_memlab(tmp_path / "run", phase1_steps=2, phase2_steps=1, batch_size=4,
                       architecture=dict(channels=(16, 32), attention=(False, True)), progress=False)
    model, early = load_model(out["final"], checkpoint=out["early"])
    assert model.latent_shape == (3, 32, 32) and model.vae is None
    prompt = MemLab().templated[0]
    ds = curvature_maps(model, [prompt], seeds=[0], checkpoint=early, steps=3, n_probes=4, progress=False)
    assert list(ds.baseline.values) == ["uncond", "checkpoint"]
    assert ds.image.shape == (1, 3, 32, 32)


def test_demo_command_writes_all_outputs(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(["memcurv", "demo", "--out", out, "--n-seeds", "1", "--steps", "8", "--n-probes", "4"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "Best global IoU" in r.stdout and "dh_uncond" in r.stdout
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"method", "subset", "iou", "constraint_to_rest", "memorized_to_rest", "constraint_to_memorized"} <= set(metrics.columns)
    ds = open_maps(out / "maps.nc")
    assert {"gt_mask", "curvature", "curvature_diff", "score_diff_sq", "image"} <= set(ds.data_vars)
    assert set(ds.label.values) == {"TV", "MV", "N"}
    html = (out / "report.html").read_text()
    assert "Plotly.newPlot" in html and not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js inline: opens offline

    r = subprocess.run(["memcurv", "evaluate", out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out / "evaluation.csv")
    assert list(table.columns[:12]) == ["method", "subset", "threshold_rule", "iou", "miou", "accuracy", "dice", "auroc", "ap",
                                        "det_auc", "tpr_at_1fpr", "seconds"]
    assert {"reference", "oracle_iou", "calibrated", "otsu"} <= set(table.threshold_rule) and {"TV", "MV", "N", "all"} <= set(table.subset)
    assert table.loc[table.method == "dh_uncond", "seconds"].gt(0).all()
    assert "reference TV iou" in r.stdout and "calibrated all accuracy" in r.stdout
    r = subprocess.run(["memcurv", "evaluate", out, "--normalise", "image", "--channel", "max"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not pd.read_csv(out / "evaluation.csv").equals(table)   # another recipe, another table
    r = subprocess.run(["memcurv", "evaluate", out, "--timestep", "999"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "timestep 999 was not captured" in r.stderr and "Traceback" not in r.stderr


def test_train_memlab_command_resumes_and_refuses_other_settings(tmp_path):
    run = ["memcurv", "train-memlab", str(tmp_path / "run"), "--phase1-steps", "1", "--phase2-steps", "1", "--batch-size", "2", "--threads", "1"]
    r = subprocess.run(run + ["--fp16"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "early" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    model, early = load_model(tmp_path / "run" / "final", checkpoint=tmp_path / "run" / "early")
    assert model.latent_shape == (3, 32, 32)
    r = subprocess.run(run + ["--fp16"], capture_output=True, text=True, timeout=600)   # finished: resuming does no step
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    r = subprocess.run(run, capture_output=True, text=True, timeout=600)                # float32 now: another configuration
    assert r.returncode == 2 and "holds a run with other settings (dtype" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(["memcurv", "train-memlab", str(tmp_path / "other"), "--phase2-steps", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "both phases need at least one step" in r.stderr
    r = subprocess.run(["memcurv", "train-memlab", str(tmp_path / "other"), "--steps", "10"], capture_output=True, text=True)
    assert r.returncode == 2 and "unrecognized arguments: --steps" in r.stderr


def test_train_memlab_flow_command_feeds_the_maps(tmp_path):
    "`memcurv train-memlab --family flow`: an SD3 pipeline in pixel space, mapped with both baselines."
    run = ["memcurv", "train-memlab", str(tmp_path / "run"), "--family", "flow", "--phase1-steps", "1",
           "--phase2-steps", "1", "--batch-size", "2", "--threads", "1"]
    r = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    model, early = load_model(tmp_path / "run" / "final", checkpoint=tmp_path / "run" / "early")
    assert (model.family, model.latent_shape) == ("sd3", (3, 32, 32))
    ds = curvature_maps(model, [MemLab().templated[0]], seeds=[0], checkpoint=early, steps=3, progress=False)
    assert list(ds.baseline.values) == ["uncond", "checkpoint"] and ds.image.shape == (1, 3, 32, 32)
    r = subprocess.run(run[:3] + ["--phase1-steps", "1", "--phase2-steps", "1", "--batch-size", "2"], capture_output=True,
                       text=True, timeout=600)   # the UNet in the flow run's folder: another configuration
    assert r.returncode == 2 and "family: flow there, unet now" in r.stderr, r.stderr
