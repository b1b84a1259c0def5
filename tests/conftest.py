from pathlib import Path

import pytest

from memcurv.models.fixtures import make_tiny_pipeline

NBS = Path(__file__).resolve().parents[1] / "nbs"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    "A tiny random-weight SD pipeline folder (with VAE), written once per test session."
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd_early(tmp_path_factory):
    "Another seed of the same architecture: stands in for a less-trained checkpoint."
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd-early", seed=1)


@pytest.fixture(scope="session")
def site_notebooks() -> list[Path]:
    "The notebooks the docs site is built from (folders and files starting with _ or . are not notebooks of the site)."
    return sorted(p for p in NBS.rglob("*.ipynb") if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))
