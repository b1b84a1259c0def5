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


def test_token_significance_and_all_peers_on_tiny_sd(tiny_sd):
    from memcurv.maps import curvature_maps
    from memcurv.peers import PEERS, peer_methods, token_significance
    model, _ = load_model(tiny_sd)
    sig = token_significance(model, ["a photo of a cat", "a cat"], seeds=[0], steps=10, batch_size=1)
    n = [len(model.tokenizer(p).input_ids) - 2 for p in ("a photo of a cat", "a cat")]   # without start and end of text
    assert sig.dims == ("sample", "token") and sig.shape == (2, n[0])
    assert np.isfinite(sig.values[0]).all() and (sig.values[0] > 0).all()
    assert np.isfinite(sig.values[1, :n[1]]).all() and np.isnan(sig.values[1, n[1]:]).all()
    ds = curvature_maps(model, ["a photo", "a cat"], seeds=[0], steps=3, n_probes=2, progress=False)
    merged = ds.merge(peer_methods(model, ds, progress=False))
    assert all(merged[m].attrs["seconds"] > 0 for m in PEERS)
    assert merged.bright_ending.shape == (2, 8, 8) and merged.wen_norm.shape == (2,)
