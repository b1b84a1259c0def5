#!/usr/bin/env bash
# The test command: installs everything on a fresh machine (Python 3.11 + pip), checks that the library and README are what the
# notebooks generate, then runs the notebook tests and the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { echo "[tests/run.sh] $1 done at ${SECONDS} s"; }   # the phases' times, for keeping the command within 20 minutes

python -m pip install -q --disable-pip-version-check torch==2.13.0   # first, so pip keeps the CPU build
python -m pip install -q --disable-pip-version-check -e ".[dev]"
# The browser tests drive Debian's chromium (Playwright cannot download its own browser here).
if ! command -v chromium > /dev/null; then
  sudo_="" && [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium > /dev/null
fi
phase install

# Notebooks are the source of truth: exporting and cleaning them must not change anything.
snapshot=$(mktemp -d)
cp -r memcurv nbs "$snapshot/"
nbdev_export
nbdev_clean
if ! diff -r -q -x __pycache__ -x '*.egg-info' "$snapshot/memcurv" memcurv || ! diff -r -q -x .ipynb_checkpoints "$snapshot/nbs" nbs; then
  echo "FAIL: nbdev_export / nbdev_clean changed the files above: the library or the notebooks are out of sync." >&2
  echo "Run nbdev_export && nbdev_clean, review and commit." >&2
  exit 1
fi
python tests/make_readme.py --check
# The library's lines are at most 120 characters (pyproject.toml's [tool.ruff]), nbdev's generated __all__ aside.
python tests/check_lines.py
phase "export, clean, README and ruff checks"

# Two cores: two notebooks at a time, one thread each, so torch does not oversubscribe the CPU.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# The notebooks' tests and the docs site in one execution: `memcurv docs` runs every notebook as nbdev_test does (the same skip
# flags, IN_TEST set, stopping at the first failing cell, which fails the command), then renders the site that the browser tests
# in tests/test_docs_site.py read. Running nbdev_test as well would execute every notebook a second time.
site="$(mktemp -d)/_site"
memcurv docs --nbs nbs --out "$site" --quiet
phase "notebooks and docs site"
# Two pytest workers (pytest-xdist), one per core; the commands the tests start run on one thread each (OMP_NUM_THREADS).
# JupyterLab's widget test runs alone afterwards: beside a busy worker its front end can render a widget before the
# kernel's model reaches it ("widget model not found").
MEMCURV_TEST_SITE="$site" python -m pytest tests -q -p no:cacheprovider -n 2 --durations=10 \
  --ignore=tests/test_widgets_browser.py
MEMCURV_TEST_SITE="$site" python -m pytest tests/test_widgets_browser.py -q -p no:cacheprovider
phase pytest
