import pytest

from memcurv.fixtures import make_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    "A tiny random-weight SD pipeline folder (with VAE), written once per test session."
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd_early(tmp_path_factory):
    "Another seed of the same architecture: stands in for a less-trained checkpoint."
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd-early", seed=1)
