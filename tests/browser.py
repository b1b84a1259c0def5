"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright (Playwright's own download is unavailable)."""
from __future__ import annotations

import contextlib
import shutil
from urllib.parse import urlparse

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run `bash tests/run.sh`, which installs it, "
                           "or `apt-get install -y chromium`")
    return path


@contextlib.contextmanager
def browser_page(viewport=(1400, 1000)):
    "A fresh page in headless Chromium; records console errors and every request that leaves localhost."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.console_errors, page.external_requests = [], []
            page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
            page.on("pageerror", lambda e: page.console_errors.append(str(e)))
            page.on("request", lambda r: _is_external(r.url) and page.external_requests.append(r.url))
            yield page
        finally:
            browser.close()


def _is_external(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme not in ("file", "data", "blob", "about") and parsed.hostname not in ("localhost", "127.0.0.1", "::1")
