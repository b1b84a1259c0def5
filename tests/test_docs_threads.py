"""Notebooks executed as `memcurv docs` executes them, from a shell with no thread variables: the worker runs torch with the
threads it was given, and a numeric notebook's asserts hold at 2 threads (peers.anisotropy compares batches of different sizes, whose
float32 sums are split differently across threads)."""
import pytest
from execnb.nbio import mk_cell, new_nb, read_nb, write_nb
from nbdev.config import get_config

from conftest import NBS
from memcurv.docsite import THREAD_VARS, render_nb, worker_pool


@pytest.fixture
def no_thread_env(monkeypatch):
    "A newcomer's shell: none of the variables that set torch's or BLAS's threads."
    for v in (*THREAD_VARS, "OMP_DYNAMIC", "OMP_WAIT_POLICY", "MKL_DYNAMIC", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.delenv(v, raising=False)


def _threads_seen(page) -> str:
    return "".join(read_nb(page).cells[0].outputs[0]["data"]["text/plain"])


def test_numeric_notebook_at_two_threads(no_thread_env, tmp_path):
    # Reports the notebook's threads, then sets its own (as a tutorial that times on one thread does)
    probe = tmp_path / "threads.ipynb"
    write_nb(new_nb([mk_cell("import os, torch\ntorch.get_num_threads(), os.environ['OMP_NUM_THREADS']"),
                     mk_cell("torch.set_num_threads(1)")]), probe)
    out = tmp_path / "out"
    with worker_pool(1, threads=2) as ex:   # one worker: the three notebooks run one after the other in the same process
        ex.submit(render_nb, probe, out / "before.ipynb").result()
        # Raises MemcurvError with the failing cell if an assert of the notebook does not hold
        ex.submit(render_nb, NBS / "peers" / "01_anisotropy.ipynb", out / "anisotropy.ipynb", get_config().tst_flags.split()).result()
        ex.submit(render_nb, probe, out / "after.ipynb").result()
    assert _threads_seen(out / "before.ipynb") == "(2, '2')", "the notebook's torch does not run with the worker's threads"
    assert _threads_seen(out / "after.ipynb") == "(2, '2')", "a notebook's own thread count leaked into the next notebooks"
    assert any(c.get("outputs") for c in read_nb(out / "anisotropy.ipynb").cells), "peers/01_anisotropy ran without outputs"
