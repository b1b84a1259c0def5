"""Peer detectors on a real diffusers pipeline folder (the tiny SD fixture, with VAE and fused attention)."""
import numpy as np

from memcurv.peers import anisotropy, bright_ending, sharpness, wen_norm
from memcurv.pipeline import load_model


def test_detectors_on_tiny_sd(tiny_sd):
    model, _ = load_model(tiny_sd)
    prompts = ["a photo", "a cat"]
    for score in (wen_norm(model, prompts, seeds=[0, 1], steps=4), anisotropy(model, prompts, seeds=[0, 1], steps=10),
                  sharpness(model, prompts, seeds=[0, 1], steps=10)):
        assert score.dims == ("sample",) and score.sizes["sample"] == 4
        assert list(score.prompt.values) == ["a photo", "a photo", "a cat", "a cat"]
        assert list(score.seed.values) == [0, 1, 0, 1]
        assert np.isfinite(score.values).all() and (score.values > 0).any()


def test_bright_ending_on_tiny_sd(tiny_sd):
    model, _ = load_model(tiny_sd)
    before = dict(model.unet.attn_processors)
    be = bright_ending(model, ["a photo", "a cat"], seeds=[0], steps=3)
    assert be.dims == ("sample", "y", "x") and be.shape == (2, 8, 8)
    assert np.isfinite(be.values).all() and (be.values >= 0).all() and (be.values <= 1).all()
    assert {k: type(v) for k, v in model.unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}
