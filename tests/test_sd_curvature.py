"""Curvature estimators on a real diffusers UNet (the tiny pipeline): exact against single JVPs, the others against exact."""
import pytest
import torch
from torch.func import jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from memcurv.curvature import coordinate_curvature
from memcurv.models.load import load_model

T = 21  # a low-noise step, where the reference procedure measures


@pytest.fixture(scope="module")
def setup(tiny_sd):
    model, _ = load_model(tiny_sd)
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    f = model.eps_fn(T, model.encode(["a photo", "a cat"]))
    sigma = model.schedule.sigma(T)
    exact, se = coordinate_curvature(f, x, sigma, estimator="exact", chunk_size=64)
    return model, x, f, sigma, exact, se


def test_exact_matches_single_jvps(setup):
    _, x, f, sigma, exact, se = setup
    assert float(se.abs().max()) == 0.0
    D = x[0].numel()
    for i in (0, 17, 100, D - 1):
        e = torch.zeros_like(x).flatten(1)
        e[:, i] = 1
        with sdpa_kernel(SDPBackend.MATH):  # fused attention has no forward-mode derivative
            Je = jvp(f, (x,), (e.reshape(x.shape),))[1].flatten(1)[:, i]
        # float32 products of a vmapped batch of 64 probes against one at a time: the batch changes the sums, up to 9e-6 of the
        # largest |kappa| (measured at 1, 2 and 4 threads, where rtol=1e-5 per coordinate left a margin of only 1.5)
        torch.testing.assert_close(exact.flatten(1)[:, i], Je / sigma, rtol=0, atol=1e-4 * float(exact.abs().max()))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_hutchinson_within_stated_error(setup, mode):
    _, x, f, sigma, exact, _ = setup
    est, se = coordinate_curvature(f, x, sigma, estimator="hutchinson", n_probes=64, probe_seed=0, mode=mode)
    covered = ((est - exact).abs() <= 3 * se).double().mean()
    assert covered >= 0.97, f"only {float(covered):.3f} of coordinates within 3 standard errors"


def test_fd_matches_exact(setup):
    _, x, f, sigma, exact, _ = setup
    est, se = coordinate_curvature(f, x, sigma, estimator="fd", chunk_size=64)
    rel = float((est - exact).norm() / exact.norm())
    assert rel < 2e-3, rel   # one-hot central differences in float32: 5.7e-4 measured at 1, 2 and 4 threads
    assert float(se.abs().max()) == 0.0


@pytest.mark.parametrize("estimator, options", [("probing", dict(n_probes=32, distance=2)), ("probing", dict(n_probes=128, distance=2, channels="split")), ("probing", dict(n_probes=128, distance=4)),
                                                ("diagpp", dict(n_probes=64))])
def test_structured_estimators_within_stated_error(setup, estimator, options):
    _, x, f, sigma, exact, _ = setup
    est, se = coordinate_curvature(f, x, sigma, estimator=estimator, probe_seed=0, **options)
    covered = ((est - exact).abs() <= 3 * se).double().mean()
    assert covered >= 0.95, f"only {float(covered):.3f} of coordinates within 3 standard errors"
