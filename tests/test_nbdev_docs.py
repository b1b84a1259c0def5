"""nbdev's own docs pipeline stays usable for those who have Quarto: its config files are valid and its processors, which execute
import and show_doc cells outside the notebook's flow, run on every notebook."""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from conftest import NBS

from memcurv.docsite import worker_pool


def _sidebar_entries(contents) -> list[str]:
    out = []
    for item in contents:
        out += _sidebar_entries(item["contents"]) if isinstance(item, dict) else [item]
    return out


def test_quarto_config_and_sidebar_are_valid(site_notebooks):
    quarto = yaml.safe_load((NBS / "_quarto.yml").read_text())
    assert quarto["project"]["type"] == "website" and "sidebar.yml" in quarto["metadata-files"]
    assert all((NBS / f).exists() for f in quarto["metadata-files"])
    sidebar = yaml.safe_load((NBS / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    assert sorted(_sidebar_entries(sidebar)) == sorted(p.relative_to(NBS).as_posix() for p in site_notebooks), \
        "nbs/sidebar.yml is stale: run `nbdev_sidebar` (or `memcurv docs`, which refreshes it) and commit it"


MIXED = "Found cells containing imports and other code"   # nbdev's warning


def _process(path: str) -> str:
    "Run nbdev's default processors (those `nbdev_proc_nbs` runs before Quarto) on one notebook; the error text, or ''."
    import warnings
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults
    os.environ["IN_TEST"] = "1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with working_directory(Path(path).parent): NBProcessor(path, procs=FilterDefaults().procs(), process=True)
        except Exception as e:
            return f"{Path(path).name}: {e}"
    # Such a cell runs twice in `nbdev_docs` (its imports pull the whole cell out of flow): slow, or wrong where it needs earlier cells.
    mixed = [str(w.message).split("---")[1].strip() for w in caught if MIXED in str(w.message)]
    return f"{Path(path).name}: {MIXED}; put the imports in a cell of their own:\n" + "\n--\n".join(mixed) if mixed else ""


def test_nbdev_processors_run_on_every_notebook(site_notebooks):
    # nbdev executes every cell that imports something (plus exported and show_doc cells) apart from the rest of the notebook,
    # so a cell mixing imports with code that needs earlier cells breaks `nbdev_docs`: keep imports in cells of their own.
    with worker_pool(2) as ex:   # the two processes share the cores, as `memcurv docs`'s do
        errors = [e for e in ex.map(_process, map(str, site_notebooks)) if e]
    assert not errors, "\n\n".join(errors)
