"""The documentation site: built strictly, then read in headless Chromium.

`keras-regkit docs --build` builds it (`mkdocs build --strict`, so a
broken link or a docstring mkdocstrings cannot read fails the build);
the built pages are served on localhost and opened in Chromium, driven by
Playwright: the home page, a guide and an API page must render their
titles and code blocks, and the search box must find `ExpAbs`.
Screenshots of each go to `site/_screenshots/`.

Needs the `docs` extra, Playwright and a Chromium (Debian's `chromium`
package; `.ci/run` installs it). Without them the tests are skipped, unless
`REGKIT_REQUIRE_DOCS=1` (set by CI) makes that a failure.
"""

import functools
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

from keras_regkit import _docs

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
SHOTS = SITE / "_screenshots"
# As the project's own machines start Chromium: no sandbox (root), no GPU,
# and none of the background connections a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.backend_independent


def _unavailable(reason):
    if os.environ.get("REGKIT_REQUIRE_DOCS") == "1":
        pytest.fail(f"REGKIT_REQUIRE_DOCS=1, but {reason}")
    pytest.skip(reason)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return _unavailable("no Chromium found (apt-get install chromium)")


@pytest.fixture(scope="module")
def site():
    for module in ("mkdocs", "material", "mkdocstrings"):
        if not _importable(module):
            _unavailable(f'{module} is missing: pip install -e ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "keras_regkit", "docs", "--build"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    SHOTS.mkdir(exist_ok=True)
    return SITE


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url(site):
    """The built site, served on localhost (the search needs http)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not _importable("playwright"):
        _unavailable("playwright is missing: pip install playwright")
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Anything the page fails to load (a font, a script from elsewhere)
    page.on(
        "console",
        lambda message: message.type == "error" and errors.append(message.text),
    )
    yield page
    page.close()
    assert not errors, f"errors in the browser's console: {errors}"


def _open(page, url):
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200, url
    return page


def _code_blocks(page):
    """The text of every highlighted code block on the page."""
    return page.locator("pre > code").all_inner_texts()


def test_home_page_shows_the_problem_and_the_two_commands(base_url, page):
    _open(page, f"{base_url}/")
    assert "keras-regkit" in page.title()
    assert page.locator("article h1").first.is_visible()
    code = "\n".join(_code_blocks(page))
    assert 'pip install ".[tensorflow-cpu,demo]" && keras-regkit demo' in code
    assert 'pip install -e ".[tensorflow-cpu,test]" && pytest' in code
    page.screenshot(path=SHOTS / "home.png", full_page=True)


def test_a_guide_renders_its_title_and_examples(base_url, page):
    _open(page, f"{base_url}/guides/dropout/")
    title = page.locator("article h1").first.inner_text().rstrip("¶")
    assert "Dropout" in title and title in page.title()
    code = _code_blocks(page)
    assert len(code) >= 2 and any("mc_predict" in block for block in code)
    page.screenshot(path=SHOTS / "guide.png", full_page=True)


def test_an_api_page_renders_signatures_from_the_docstrings(base_url, page):
    _open(page, f"{base_url}/api/regularizers/")
    heading = page.locator('h2[id="keras_regkit.regularizers.ExpAbs"]')
    assert heading.count() == 1 and "ExpAbs" in heading.inner_text()
    signatures = page.locator(".doc-signature").all_inner_texts()
    assert any(s.startswith("ExpAbs(") for s in signatures), signatures
    # The docstring's example, as a code block.
    assert any(">>> " in block for block in _code_blocks(page))
    page.screenshot(path=SHOTS / "api.png")


def test_search_finds_exp_abs(base_url, page):
    _open(page, f"{base_url}/")
    page.locator("input.md-search__input").click()
    page.keyboard.type("ExpAbs")  # key by key, as Material's search listens
    results = page.locator(".md-search-result__item")
    results.first.wait_for(state="visible", timeout=15_000)
    links = [
        results.nth(i).locator("a").first.get_attribute("href")
        for i in range(results.count())
    ]
    assert any("api/regularizers" in link for link in links), links
    page.screenshot(path=SHOTS / "search.png")


def test_docs_command_finds_the_checkout(tmp_path, monkeypatch):
    assert _docs.find_config(ROOT / "docs") == ROOT / "mkdocs.yml"
    # Elsewhere, the editable install's checkout is found instead.
    assert _docs.find_config(tmp_path) == ROOT / "mkdocs.yml"
    monkeypatch.setattr(_docs, "__file__", str(tmp_path / "pkg" / "x.py"))
    assert _docs.find_config(tmp_path) is None


def test_docs_command_without_sources_or_mkdocs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_docs, "find_config", lambda: None)
    with pytest.raises(SystemExit) as exited:
        _docs.main(["--build"])
    assert exited.value.code == 2
    assert "come with a checkout of the repository" in capsys.readouterr().err
    monkeypatch.setattr(
        _docs.importlib.util,
        "find_spec",
        lambda name: None if name == "mkdocs" else object(),
    )
    with pytest.raises(SystemExit):
        _docs.main([])
    assert 'pip install "keras-regkit[docs]"' in capsys.readouterr().err
