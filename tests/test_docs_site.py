"""The documentation site: built from nbs/ as `memcurv docs` builds it, served on localhost and read in headless Chromium.

Every page is visited once (module fixture `visits`); the tests check what was recorded: one page per notebook, navigation that
resolves, interactive plotly figures, typeset math, working search, no JavaScript errors and no request leaving localhost.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import browser_page  # noqa: E402
from conftest import NBS  # noqa: E402

WAIT = 30_000  # ms: plotly and MathJax drawing a page on a busy two-core machine


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def pages(site_notebooks) -> list[str]:
    "The page of every notebook the site is built from."
    from memcurv.docsite import page_name
    return sorted(page_name(p.relative_to(NBS)) + ".html" for p in site_notebooks)


@pytest.fixture(scope="module")
def base_url(pages, tmp_path_factory):
    "The site, built once from nbs/ (or the one tests/run.sh has just built, at $MEMCURV_TEST_SITE) and served from 127.0.0.1."
    if os.environ.get("MEMCURV_TEST_SITE"):
        site = Path(os.environ["MEMCURV_TEST_SITE"])
        assert (site / "index.html").exists(), f"MEMCURV_TEST_SITE={site} is not a built site: unset it to build one here"
    else:
        site = tmp_path_factory.mktemp("docs") / "_site"
        r = subprocess.run(["memcurv", "docs", "--nbs", NBS, "--out", site, "--quiet"], capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, f"memcurv docs failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


# A figure that shows data, not only axes: heatmap or image pixels, markers, lines or bars (an explorer saved before its first
# redraw would show empty panels).
_MARKED = """() => [...document.querySelectorAll('.plotly-graph-div')].filter(d =>
                  d.querySelector('.hm image, .imagelayer image, .scatterlayer .point, .scatterlayer .js-line, .barlayer .point')).length"""
_DRAWN = """() => [...document.querySelectorAll('.plotly-graph-div')]
                 .every(d => d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg'))"""


@pytest.fixture(scope="module")
def visits(base_url, pages) -> dict:
    "Each notebook's page opened in Chromium, once its figures and math are drawn: what it showed and asked for."
    out = {}
    with browser_page() as page:
        for name in pages:
            page.console_errors.clear(); page.external_requests.clear()
            response = page.goto(base_url + name)
            page.wait_for_load_state("networkidle")
            page.wait_for_function(_DRAWN, timeout=WAIT)
            page.evaluate("() => window.MathJax?.startup?.promise")  # resolves once MathJax has typeset the page
            out[name] = dict(
                status=response.status, h1=" ".join(page.locator("article h1").all_inner_texts()),
                figures=page.locator(".plotly-graph-div").count(), drawn=page.locator(".js-plotly-plot .main-svg").count(),
                marked=page.evaluate(_MARKED),
                math=page.locator("article .math").count(), typeset=page.locator("article .math mjx-container").count(),
                math_errors=page.locator("mjx-merror").count(),
                sidebar=page.eval_on_selector_all(".sidebar-tree a.reference", "es => es.map(e => e.href)"),
                nav=page.eval_on_selector_all(".sidebar-brand, .sidebar-tree a, .related-pages a", "es => es.map(e => e.href)"),
                links=page.eval_on_selector_all("article a[href]", "es => es.map(e => e.href)"),
                errors=list(page.console_errors), external=list(page.external_requests))
    return out


def test_every_notebook_has_a_page(visits):
    assert {"index.html", "core.html", "docsite.html"} <= set(visits)
    for name, v in visits.items():
        assert v["status"] == 200, name
        assert v["h1"].strip(), f"{name} has no title"


def test_no_javascript_errors_and_nothing_leaves_localhost(visits):
    assert {n: v["errors"] for n, v in visits.items() if v["errors"]} == {}
    assert {n: v["external"] for n, v in visits.items() if v["external"]} == {}


def test_sidebar_lists_every_notebook(visits, base_url, pages):
    listed = {urldefrag(u)[0].removeprefix(base_url) for u in visits["index.html"]["sidebar"]}
    assert listed == set(pages) - {"index.html"}


@functools.cache
def _fetch(url: str) -> str:
    with urllib.request.urlopen(url) as r:
        assert r.status == 200, url
        return r.read().decode(errors="replace")


def _resolves(url: str, base_url: str):
    page, fragment = urldefrag(url)
    assert page.startswith(base_url), f"{url} leaves the site"
    html = _fetch(page)
    assert not fragment or re.search(rf'\bid="{re.escape(fragment)}"', html), f"{url}: no element with that id"


def test_navigation_links_resolve(visits, base_url):
    nav = {u for v in visits.values() for u in v["nav"]}
    assert len(nav) >= len(visits)
    for url in nav:
        _resolves(url, base_url)
        assert urldefrag(url)[0].removeprefix(base_url) in {*visits, ""}, f"{url} is not a notebook's page"


def test_links_between_pages_resolve(visits, base_url):
    "nbdev links names to their docs on the public site; on this copy they must lead to the page and anchor here."
    internal = {(n, u) for n, v in visits.items() for u in v["links"] if urlparse(u).hostname == "127.0.0.1"}
    assert any("#" in u and urldefrag(u)[0] != base_url + n for n, u in internal), "no link to a name on another page"
    for _, url in internal: _resolves(url, base_url)


def test_plotly_figures_are_drawn(visits):
    with_figures = {n: v for n, v in visits.items() if v["figures"]}
    assert with_figures, "no page shows a plotly figure"
    for name, v in with_figures.items():
        assert v["drawn"] >= v["figures"], name
        assert v["marked"] == v["figures"], f"{name}: {v['figures'] - v['marked']} figure(s) show no data"
    assert with_figures.get("widgets.html", {}).get("figures", 0) >= 2, "the explorers are not on the widgets page"


def test_math_is_typeset(visits):
    with_math = {n: v for n, v in visits.items() if v["math"]}
    assert "index.html" in with_math and "core.html" in with_math
    for name, v in with_math.items():
        assert (v["typeset"], v["math_errors"]) == (v["math"], 0), name


def test_search_finds_pages(base_url):
    with browser_page() as page:
        page.goto(base_url + "index.html")
        page.fill("input.sidebar-search", "curvature")
        page.press("input.sidebar-search", "Enter")
        page.wait_for_selector("#search-results ul.search li", timeout=WAIT)
        hits = page.eval_on_selector_all("#search-results ul.search li a", "es => es.map(e => e.href)")
        assert any(h.startswith(base_url + "curvature.html") for h in hits), hits
        assert (page.console_errors, page.external_requests) == ([], [])
