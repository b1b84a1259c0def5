"""FB-Mem, InvMM and FLIPD's LID end to end through a real diffusers pipeline (the tiny SD fixture: VAE, fused attention),
and `memcurv maps --peers --originals` as a real subprocess."""
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from memcurv.errors import MemcurvError
from memcurv.evaluate.table import evaluate_dataset
from memcurv.images import load_originals
from memcurv.peers.fbmem import AttentionSegmenter, fb_mem_maps
from memcurv.peers.invmm import invmm, kl_to_standard
from memcurv.maps import curvature_maps
from memcurv.schema import open_maps
from memcurv.peers.flipd import flipd_lid
from memcurv.peers.suite import peer_methods
from memcurv.models.load import load_model

PROMPTS = ["a photo of a cat", "a red house"]


@pytest.fixture(scope="module")
def tiny(tiny_sd):
    model, _ = load_model(tiny_sd)
    ds = curvature_maps(model, PROMPTS, seeds=[0, 1], steps=4, n_probes=4, progress=False)
    return model, ds


def images_of(ds):
    return torch.from_numpy(ds.image.transpose("sample", "color", "image_y", "image_x").values)


def test_fbmem_finds_each_generation_among_originals_that_hold_it(tiny):
    model, ds = tiny
    gens = images_of(ds)
    fb = fb_mem_maps(ds, gens[[2, 0]], AttentionSegmenter(model), original_names=["cat", "house"], progress=False)
    assert fb.fbmem.shape == (4, 8, 8) and fb.fbmem_mask.shape == (4, 16, 16)
    # Generations 0 and 2 are among the originals: reproduced in both regions, and their own original ranks first.
    assert list(fb.fbmem_class.values[[0, 2]]) == ["both", "both"]
    assert list(fb.original.values[fb.fbmem_top.values[[0, 2], 0]]) == ["house", "cat"]
    np.testing.assert_allclose(fb.fbmem_score.values[[0, 2]], 1.0, atol=1e-5)
    assert (fb.fbmem_score.values[[1, 3]] < 1 - 1e-3).all()
    merged = ds.merge(fb)
    assert {"fbmem", "fbmem_score"} <= set(merged.data_vars)


def test_fbmem_bad_input(tiny):
    model, ds = tiny
    gens = images_of(ds)
    with pytest.raises(MemcurvError, match="there are no originals"): fb_mem_maps(ds, gens[:0], AttentionSegmenter(model))
    with pytest.raises(MemcurvError, match="resize them to the generation size"): fb_mem_maps(ds, torch.zeros(1, 3, 32, 32), AttentionSegmenter(model))
    with pytest.raises(MemcurvError, match="is empty"):
        fb_mem_maps(ds, gens, lambda image, prompt: torch.zeros(16, 16, dtype=torch.bool), progress=False)


def test_invmm_on_tiny_sd(tiny):
    model, ds = tiny
    gens = images_of(ds)[:1]
    opts = dict(budget=2, n_noise=2, check_every=1, n_check=1, sample_steps=2, guidance=7.5)
    # A test every draw passes: success at the first check, and the measure is the learned Gaussian's KL then (> 0 after a step).
    done = invmm(model, gens, PROMPTS[:1], threshold=-1.0, progress=False, **opts)
    assert int(done.invmm_steps[0]) == 1 and 0 < float(done.invmm[0]) < np.inf
    # One no draw can pass: the budget runs out and the measure is +inf.
    never = invmm(model, gens, PROMPTS[:1], threshold=1.01, progress=False, **opts)
    assert int(never.invmm_steps[0]) == 2 and float(never.invmm[0]) == np.inf and np.isfinite(never.invmm_similarity[0])
    assert never.invmm.attrs["seconds_per_image"] > 0
    with pytest.raises(MemcurvError, match="budget=0"): invmm(model, gens, PROMPTS[:1], budget=0)
    z = model.encode_images(gens)
    assert z.shape == (1, *model.latent_shape)
    assert float(kl_to_standard(torch.zeros(3), torch.zeros(3))) == 0.0


def test_flipd_on_tiny_sd(tiny):
    _, ds = tiny
    lid = flipd_lid(ds)
    D = ds.sizes["channel"] * ds.sizes["y"] * ds.sizes["x"]
    assert lid.flipd_lid.dims == ("sample", "branch") and np.isfinite(lid.flipd_lid).all()
    s2 = float(ds.sigma[-1]) ** 2
    expected = D - s2 * ds.curvature.isel(timestep=-1).sel(branch="cond").astype(float).sum(("channel", "y", "x")).values
    np.testing.assert_allclose(lid.flipd_lid.sel(branch="cond").values, expected, rtol=1e-9)
    merged = ds.merge(peer_methods(None, ds, methods=["flipd"], progress=False))
    assert merged.flipd_collapse.attrs["jacobian_products_extra"] == 0


def memcurv(*args):
    return subprocess.run(["memcurv", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_maps_with_peers_and_originals(tiny_sd, tmp_path):
    folder = tmp_path / "originals"; folder.mkdir()
    for i in range(2): Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "maps.nc"
    r = memcurv("maps", tiny_sd, "--prompt", "a photo", "--steps", 3, "--n-probes", 4, "--peers", "--originals", folder, "--out", out)
    assert r.returncode == 0, r.stderr
    ds = open_maps(out).load()
    assert {"fbmem", "fbmem_score", "flipd_collapse", "flipd_collapse_uncond", "wen_norm"} <= set(ds.data_vars)
    assert list(ds.original.values) == ["0.png", "1.png"]
    empty = tmp_path / "empty"; empty.mkdir()
    r = memcurv("maps", tiny_sd, "--prompt", "a photo", "--originals", empty, "--out", tmp_path / "x.nc")
    assert r.returncode == 2 and "holds no originals" in r.stderr and "Traceback" not in r.stderr
    big = tmp_path / "big"; big.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(big / "a.png")
    r = memcurv("maps", tiny_sd, "--prompt", "a photo", "--steps", 2, "--n-probes", 4, "--originals", big, "--out", tmp_path / "y.nc")
    assert r.returncode == 2 and "resize them to the generation size" in r.stderr
