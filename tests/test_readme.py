"""README.md must be what nbs/index.ipynb generates."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_in_sync_with_index_notebook():
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "tests" / "make_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "README.md").read_text(encoding="utf-8") == mod.readme_text(), "run `python tests/make_readme.py`"
