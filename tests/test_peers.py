"""Peer detectors on a real diffusers pipeline folder (the tiny SD fixture, with VAE and fused attention)."""
import numpy as np
import torch
from diffusers import DDIMScheduler
from transformers import CLIPTokenizer

from memcurv.core import SD_SCHEDULER
from memcurv.models.fixtures import make_tiny_pipeline, tiny_text_encoder, tiny_unet
from memcurv.peers.anisotropy import anisotropy
from memcurv.peers.bright_ending import bright_ending
from memcurv.peers.sharpness import sharpness
from memcurv.peers.wen import wen_norm
from memcurv.models.load import load_model


def test_detectors_on_tiny_sd(tiny_sd):
    model, _ = load_model(tiny_sd)
    prompts = ["a photo", "a cat"]
    for score in (wen_norm(model, prompts, seeds=[0, 1], steps=4), wen_norm(model, prompts, seeds=[0, 1], steps=4, first_steps=2),
                  anisotropy(model, prompts, seeds=[0, 1], steps=10), sharpness(model, prompts, seeds=[0, 1], steps=10)):
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
    assert np.isfinite(be.score.values).all() and (be.score.values > 0).all()
    assert {k: type(v) for k, v in model.unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}


def test_token_significance_and_all_peers_on_tiny_sd(tiny_sd):
    from memcurv.maps import curvature_maps
    from memcurv.peers.suite import PEERS, peer_methods
    from memcurv.peers.wen import token_significance
    model, _ = load_model(tiny_sd)
    sig = token_significance(model, ["a photo of a cat", "a cat"], seeds=[0], steps=10, batch_size=1)
    n = [len(model.tokenizer(p).input_ids) - 2 for p in ("a photo of a cat", "a cat")]   # without start and end of text
    assert sig.dims == ("sample", "token") and sig.shape == (2, n[0])
    assert np.isfinite(sig.values[0]).all() and (sig.values[0] > 0).all()
    assert np.isfinite(sig.values[1, :n[1]]).all() and np.isnan(sig.values[1, n[1]:]).all()
    ds = curvature_maps(model, ["a photo", "a cat"], seeds=[0], steps=3, n_probes=4, progress=False)
    merged = ds.merge(peer_methods(model, ds, progress=False))
    assert all(merged[m].attrs["seconds"] > 0 for m in (*PEERS[:-1], "bright_ending_score", "flipd_collapse"))
    assert merged.bright_ending.shape == (2, 8, 8) and merged.wen_norm.shape == (2,) and merged.bright_ending_score.shape == (2,)


def test_anisotropy_on_v_prediction_is_the_released_formula(tmp_path):
    "On a v-prediction model: gamma1 ||(alpha/sigma^2)(v_c - v_u)|| at the first step + gamma2 mean cosine(v_u, v_c - v_u) at the third-last."
    model, _ = load_model(make_tiny_pipeline(tmp_path / "sd-v", prediction_type="v_prediction", vae=False))
    prompts, seeds, steps = ["a photo", "a cat"], [0, 1], 10
    score = anisotropy(model, prompts, seeds=seeds, steps=steps)
    scheduler = DDIMScheduler.from_config({**SD_SCHEDULER, "prediction_type": "v_prediction"})
    scheduler.set_timesteps(steps)
    t_first, t_low = int(scheduler.timesteps[0]), int(scheduler.timesteps[-3])
    abar = scheduler.alphas_cumprod.double()
    x = torch.stack([torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(s)) for _ in prompts for s in seeds])
    tok = model.tokenizer
    embed = lambda ps: model.text_encoder(tok(ps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids)[0]
    with torch.no_grad():
        cond, uncond = embed([p for p in prompts for _ in seeds]), embed([""] * len(x))
        v = lambda t, c: model.unet(x, t, encoder_hidden_states=c).sample.double()
        d_first = v(t_first, cond) - v(t_first, uncond)
        norm = (abar[t_first].sqrt() / (1 - abar[t_first]) * d_first).flatten(1).norm(dim=1)
        v_u = v(t_low, uncond)
        cosine = torch.nn.functional.cosine_similarity(v_u, v(t_low, cond) - v_u, dim=1).flatten(1).mean(1)
    expected = (norm + 2.0 * cosine).numpy()                     # the tiny model is conditioned like SD 1: gamma = (1, 2)
    assert np.allclose(score.values, expected, rtol=1e-4, atol=1e-6), (score.values, expected)
    assert not np.allclose(anisotropy(model, prompts, seeds=seeds, steps=steps, variant="epsilon").values, expected, rtol=1e-3)


def test_anisotropy_weights_follow_the_model_family(tmp_path):
    "A model with SD 2's 1024-wide text conditioning gets the released SD 2 weights, gamma = (1, 0.1)."
    folder = make_tiny_pipeline(tmp_path / "sd2-like", vae=False)
    tiny_unet(cross_attention_dim=1024).save_pretrained(folder / "unet")
    tiny_text_encoder(len(CLIPTokenizer.from_pretrained(folder / "tokenizer")), hidden_size=1024, layers=1).save_pretrained(folder / "text_encoder")
    model, _ = load_model(folder)
    assert model.family == "sd2"
    score = anisotropy(model, ["a photo"], seeds=[0, 1], steps=10)
    assert np.allclose(score.values, score.norm.values + 0.1 * score.cosine.values)
    tiny, _ = load_model(make_tiny_pipeline(tmp_path / "sd1-like", vae=False))
    assert tiny.family == "sd1"
