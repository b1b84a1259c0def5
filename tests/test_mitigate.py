"""`memcurv mitigate` end to end on the tiny SD pipeline through diffusers (a real subprocess), and its clear errors."""
import re
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from memcurv.errors import MemcurvError
from memcurv.mitigate import mitigate
from memcurv.models.sd import StableDiffusionModel
from memcurv.errors import MemcurvWarning


def memcurv(*args):
    return subprocess.run(["memcurv", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_writes_before_mask_after_table_and_report(tiny_sd, tmp_path):
    out = tmp_path / "mit"
    r = memcurv("mitigate", tiny_sd, "--prompt", "a photo", "--prompt", "a cat", "--seeds", 0, 1, "--out", out)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out / "table.csv")
    assert list(table.prompt) == ["a photo", "a photo", "a cat", "a cat"] and list(table.seed) == [0, 1, 0, 1]
    assert ((table.marked > 0) & (table.marked <= 0.9)).all()
    for n in range(4):
        before, after = (np.asarray(Image.open(out / f"{n:03d}_{k}.png")) for k in ("before", "after"))
        mask = np.asarray(Image.open(out / f"{n:03d}_mask.png")) > 0
        assert before.shape == after.shape == (*mask.shape, 3) == (16, 16, 3)   # the tiny VAE decodes 8 x 8 latents to 16 x 16 images; the mask is upsampled
        assert (before[~mask] == after[~mask]).all()     # outside the mask: the original image
        assert (before[mask] != after[mask]).any()       # inside it: regenerated
    html = (out / "report.html").read_text()
    assert "Plotly.newPlot" in html and not re.search(r"<script[^>]*\bsrc=", html) and "a cat" in html   # plotly.js inline: opens offline


def test_cli_errors_are_one_clear_line(tiny_sd, tmp_path):
    cases = [(["mitigate", tiny_sd, "--out", tmp_path / "a"], "no prompts"),
             (["mitigate", tiny_sd, "--prompt", "a photo", "--threshold", 0, "--min-score", -1, "--out", tmp_path / "b"], "whole-image mitigation"),
             (["mitigate", tmp_path / "nowhere", "--prompt", "a photo", "--out", tmp_path / "c"], "is not a folder")]
    for args, message in cases:
        r = memcurv(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "memcurv: error:" in r.stderr and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_nothing_marked_returns_the_original(tiny_sd, tmp_path):
    model = StableDiffusionModel(tiny_sd)
    with pytest.warns(MemcurvWarning, match="nothing to mitigate"):
        r = mitigate(model, "a photo", 0, min_score=1e30)
    assert r.row["marked"] == 0 and not r.mask.any() and (r.after == r.before).all()
    # and the CLI says so in one line, writes the original as the "after" image
    out = tmp_path / "none"
    cli = memcurv("mitigate", tiny_sd, "--prompt", "a photo", "--min-score", 1e30, "--out", out)
    assert cli.returncode == 0 and "memcurv: warning: nothing to mitigate" in cli.stderr, cli.stderr
    assert (np.asarray(Image.open(out / "000_before.png")) == np.asarray(Image.open(out / "000_after.png"))).all()


def test_bad_arguments(tiny_sd):
    model = StableDiffusionModel(tiny_sd)
    with pytest.raises(MemcurvError, match="threshold must lie in"): mitigate(model, "a photo", 0, threshold=1.5)
    with pytest.raises(MemcurvError, match="max_fraction"): mitigate(model, "a photo", 0, max_fraction=0)


def test_whole_image_mitigations_through_diffusers(tiny_sd):
    "Wen's and Anisotropy's mitigations on the tiny pipeline: images of the pipeline's size; Anisotropy's threshold in the model's own units."
    from memcurv.mitigate import (anisotropy_latent, anisotropy_mitigation, anisotropy_threshold, sail_loss, wen_mitigation)
    from memcurv.core import make_sampler
    from memcurv.sampling import initial_noise
    model = StableDiffusionModel(tiny_sd)
    level = anisotropy_threshold(model, ["a photo", "a cat"], seeds=range(4))
    t = int(make_sampler(model.schedule, "dpm++", 5).timesteps[0])
    with torch.no_grad():   # the median of the two prompts' losses at the seeds' own noise
        losses = torch.cat([sail_loss(model, initial_noise(model, range(4)), t, model.encode([p]), model.encode([""]), 0.05) for p in ("a photo", "a cat")])
    assert torch.isfinite(losses).all() and abs(level - float(losses.double().quantile(0.5))) < 1e-6 * level
    lat, how = anisotropy_latent(model, "a photo", 0, threshold=level, budget=4, max_steps=3)
    assert lat.shape == (1, *model.latent_shape) and how["loss"] <= how["threshold"]
    for img, seconds in (anisotropy_mitigation(model, "a photo", 0, threshold=level, budget=4, max_steps=3), wen_mitigation(model, "a photo", 0, iterations=2)):
        assert img.shape == (3, 16, 16) and 0 <= img.min() and img.max() <= 1 and seconds > 0
    with pytest.raises(MemcurvError, match="raise threshold, budget or max_rounds"):
        anisotropy_latent(model, "a photo", 0, threshold=1e-9, budget=2, max_steps=1, max_rounds=2)
    with pytest.raises(MemcurvError, match="quantile must lie in"): anisotropy_threshold(model, ["a photo"], quantile=1)
