"""The built book, opened from disk in a real browser (Debian's Chromium through Playwright), works offline.

Every page of ``_build/html`` (except Sphinx's search/index pages and the root redirect) is opened with
``file://`` while every http(s) request is aborted, so a page that still needs a CDN shows up as an external
request (printed) and as missing math or widgets. The tests then assert, page by page:

- no request leaves ``file://`` and no local file fails to load;
- no console error or uncaught page error, except the one known harmless message of sphinx-thebe
  (``Identifier 'THEBE_JS_URL' has already been declared``, emitted twice by JB 1.0.4 on every page);
- MathJax typeset every ``.math`` element (no raw TeX left, no ``mjx-merror``);
- pages with saved widget state render their widgets, and on the welcome chapter the jslinked readout
  follows the slider with no kernel;
- exercises are present, and each dropdown solution starts hidden and opens on click;
- chapter pages offer the Colab launch link built from ``repository.url`` and the ``.ipynb`` download;
- at the 1280-px viewport no display equation and no code block is wider than its container (with every
  folded cell, ``<details>`` and dropdown opened first, so hidden code is measured too);
- every figure (a ``<figure>`` or a cell's output image) has a caption, or a sentence that reads it: the
  nearest text after the figure's cell, or the nearest text before it (code cells in between skipped), is a
  paragraph, list or admonition of at least eight words, not a heading (the "Check your understanding" boxes
  do not count as text about a figure);
- the "Check your understanding" answers start hidden.

Full-page screenshots go to ``artifacts/screenshots/`` (git-ignored) for a human to look at.
``make test`` builds the book first; run alone, the tests skip when ``_build/html`` is missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# sphinx-thebe 0.3.1 under Jupyter Book 1.0.4 writes its inline config script twice; thebe is never launched.
ALLOWED_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class PageReport:
    """What one page did in the browser."""

    path: Path
    source: str
    external: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    math: Dict[str, int] = field(default_factory=dict)
    widgets: Dict[str, object] = field(default_factory=dict)
    solutions: Dict[str, object] = field(default_factory=dict)
    links: List[str] = field(default_factory=list)
    screenshot: Path | None = None
    overflow: List[str] = field(default_factory=list)
    figures: Dict[str, object] = field(default_factory=dict)
    quiz: Dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.relative_to(HTML).as_posix()


def book_pages() -> List[Path]:
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML).as_posix()
        if rel.startswith(("_static/", "_sources/", "_images/")) or rel in {"genindex.html", "search.html"}:
            continue
        if 'http-equiv="refresh"' in path.read_text(encoding="utf-8", errors="replace")[:2000].lower():
            continue  # the root index.html only redirects to the intro page (document.body is null meanwhile)
        pages.append(path)
    return pages


def _visit(browser, path: Path) -> PageReport:
    source = path.read_text(encoding="utf-8")
    report = PageReport(path=path, source=source)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("http*://**", lambda route: route.abort())  # nothing may reach the network
    page = context.new_page()
    page.on("request", lambda req: None if req.url.startswith(LOCAL_SCHEMES) else report.external.append(req.url))
    page.on("requestfailed", lambda req: report.failed.append(f"{req.url} ({req.failure})"))
    page.on("console", lambda msg: report.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: report.errors.append(str(exc)))
    page.goto(path.as_uri(), wait_until="load")

    if 'class="math' in source:
        # Sphinx loads MathJax only on pages with math of their own; math elsewhere on the page (e.g. a chapter
        # title with TeX in the navigation) would then show as raw TeX.
        assert "mathjax" in source.lower(), f"{path.name}: has math but loads no MathJax (TeX in a nav title?)"
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=15000)
        page.evaluate("() => MathJax.startup.promise")
        report.math = page.evaluate("""() => ({
            containers: document.querySelectorAll('mjx-container').length,
            untypeset: Array.from(document.querySelectorAll('.math'))
                            .filter(el => !el.querySelector('mjx-container')).length,
            errors: document.querySelectorAll('mjx-merror').length,
        })""")

    if "application/vnd.jupyter.widget-state+json" in source:
        page.wait_for_selector(".widget-slider", timeout=20000)
        report.widgets = page.evaluate("""() => ({
            sliders: document.querySelectorAll('.widget-slider').length,
            views: document.querySelectorAll('.jupyter-widgets').length,
            unrendered: Array.from(document.querySelectorAll(
                'script[type="application/vnd.jupyter.widget-view+json"]'))
                .filter(s => !s.parentElement.querySelector('.jupyter-widgets')).length,
        })""")
        if path.name == "00_welcome.html":
            select = page.locator("select").first
            before = select.evaluate("el => el.selectedIndex")
            page.locator(".widget-slider .noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => document.querySelector('select').selectedIndex !== {before}",
                                   timeout=5000)
            report.widgets["readout_index"] = (before, select.evaluate("el => el.selectedIndex"))
            page.keyboard.press("ArrowLeft")  # back to the saved value for the screenshot

    if 'class="solution' in source or 'class="exercise' in source:
        report.solutions = page.evaluate("""() => ({
            exercises: document.querySelectorAll('.exercise').length,
            dropdowns: document.querySelectorAll('.solution.dropdown').length,
            hidden: Array.from(document.querySelectorAll('.solution.dropdown > section'))
                         .filter(s => getComputedStyle(s).visibility === 'hidden'
                                      || s.getBoundingClientRect().height === 0).length,
        })""")
        if report.solutions["dropdowns"]:
            page.locator(".solution.dropdown .toggle-button").first.click()
            page.wait_for_timeout(300)
            report.solutions["opened_visible"] = page.locator(".solution.dropdown > section").first.is_visible()

    report.links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.wait_for_timeout(200)  # let late font/style loads report failures before the screenshot
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report.screenshot = SCREENSHOTS / (report.name.replace("/", "__").removesuffix(".html") + ".png")
    page.screenshot(path=str(report.screenshot), full_page=True)
    report.quiz = page.evaluate(QUIZ_JS)
    report.figures = page.evaluate(FIGURES_JS)
    # open everything that is folded (hide-input cells, dropdown solutions and answers), then measure widths
    page.evaluate("() => { document.querySelectorAll('details').forEach(d => { d.open = true; }); "
                  "document.querySelectorAll('button.toggle-button').forEach(b => { "
                  "if (b.classList.contains('toggle-button-hidden') || "
                  "b.getAttribute('aria-expanded') !== 'true') b.click(); }); }")
    page.wait_for_timeout(400)
    report.overflow = page.evaluate(OVERFLOW_JS)
    context.close()
    return report


# Display equations (div.math, typeset by MathJax) and code blocks (div.highlight pre, outside the stream and
# text outputs of cells) that are wider than the box they sit in: the reader would have to scroll, or the page
# cuts them off (an ``overflow: hidden`` parent). 1 px of tolerance for sub-pixel rounding.
OVERFLOW_JS = """() => {
  const found = [];
  const tol = 1;
  const visible = el => el.clientWidth > 0 && el.getClientRects().length > 0;
  document.querySelectorAll('div.math').forEach(el => {
    if (!visible(el)) return;
    const box = el.clientWidth;
    const inner = el.querySelector('mjx-container');
    const math = el.querySelector('mjx-math');
    const wide = Math.max(el.scrollWidth, inner ? inner.scrollWidth : 0,
                          math ? math.getBoundingClientRect().width : 0);
    if (wide > box + tol) {
      const tex = (el.getAttribute('id') || '') + ' ' + (el.textContent || '').trim().slice(0, 60);
      found.push(`equation ${tex}: ${Math.round(wide)} px in a ${box} px box`);
    }
  });
  document.querySelectorAll('div.highlight pre').forEach(el => {
    if (!visible(el) || el.closest('.output.stream, .output.text_plain, .output.traceback, .output.stderr'))
      return;
    if (el.scrollWidth > el.clientWidth + tol) {
      const longest = Math.max(...el.textContent.split('\\n').map(l => l.length));
      const first = el.textContent.split('\\n').find(l => l.length === longest) || '';
      found.push(`code block: ${el.scrollWidth} px in a ${el.clientWidth} px box, longest line ` +
                 `${longest} characters: ${first.trim().slice(0, 70)}`);
    }
  });
  return found;
}"""

# Figures: a <figure> needs a <figcaption>; an image in a cell's output needs a sentence that reads it, i.e. the
# nearest element after its cell, or before it, that is not a code cell is text (paragraph, list, admonition,
# block quote) of at least 8 words, not a heading or a question box. Widget frames are not figures.
FIGURES_JS = """() => {
  const quiz = el => el.classList.contains('admonition') && (el.querySelector('.admonition-title') || {})
                       .textContent === 'Check your understanding';
  const textual = el => !!el && (/^(P|UL|OL|DL|BLOCKQUOTE)$/.test(el.tagName)
                                 || (el.classList.contains('admonition') && !quiz(el)));
  const words = el => (el && el.textContent || '').trim().split(/\\s+/).filter(Boolean).length;
  const isCell = el => el && el.classList && el.classList.contains('cell');
  const missing = [];
  let count = 0;
  document.querySelectorAll('figure').forEach(fig => {
    count += 1;
    if (!fig.querySelector('figcaption')) missing.push('a <figure> without <figcaption>');
  });
  document.querySelectorAll('div.cell_output img').forEach(img => {
    if (img.closest('figure') || img.closest('.jupyter-widgets, .widget-html, .widget-box')) return;
    count += 1;
    const cell = img.closest('div.cell');
    if (!cell) return;
    let next = cell.nextElementSibling;
    while (isCell(next)) next = next.nextElementSibling;
    if (textual(next) && words(next) >= 8) return;
    let prev = cell.previousElementSibling;
    while (isCell(prev)) prev = prev.previousElementSibling;
    if (textual(prev) && words(prev) >= 8) return;
    const source = (cell.querySelector('.cell_input') || cell).textContent.trim().split('\\n')[0];
    missing.push(`image of the cell starting "${source.slice(0, 60)}"`);
  });
  return {count, missing};
}"""

QUIZ_JS = """() => {
  const boxes = Array.from(document.querySelectorAll('div.admonition'))
    .filter(el => (el.querySelector('.admonition-title') || {}).textContent === 'Check your understanding');
  const answers = boxes.map(b => b.querySelector('div.admonition.dropdown')).filter(Boolean);
  const shown = answers.filter(a => {
    const body = Array.from(a.children).filter(c => !c.classList.contains('admonition-title')
                                                 && c.tagName !== 'BUTTON');
    return body.some(c => getComputedStyle(c).visibility !== 'hidden' && c.getBoundingClientRect().height > 0);
  });
  return {boxes: boxes.length, answers: answers.length, shown: shown.length};
}"""


@pytest.fixture(scope="module")
def reports() -> Dict[str, PageReport]:
    if not (HTML / "index.html").is_file():
        pytest.skip(f"{HTML} is missing: build the book first (`make book`; `make test` does it for you)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    for old in SCREENSHOTS.glob("*.png"):  # screenshots of pages that no longer exist must not linger
        old.unlink()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            result = {r.name: r for r in (_visit(browser, path) for path in book_pages())}
        finally:
            browser.close()
    assert result, f"no pages found under {HTML}"
    return result


def _config():
    import yaml
    return yaml.safe_load((REPO / "_config.yml").read_text())


def test_every_toc_page_was_built_and_visited(reports):
    import yaml
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + re.findall(r"file:\s*(\S+)", (REPO / "_toc.yml").read_text())
    missing = [f for f in files if f"{f}.html" not in reports]
    assert not missing, f"pages in _toc.yml without a built page: {missing}"


def test_no_request_leaves_file_urls(reports):
    external = {name: r.external for name, r in reports.items() if r.external}
    failed = {name: r.failed for name, r in reports.items() if r.failed}
    for name, urls in {**external, **failed}.items():
        print(name, *urls, sep="\n  ")
    assert not external, f"pages requested the network: {external}"
    assert not failed, f"local files failed to load: {failed}"


def test_no_console_errors(reports):
    errors = {name: [e for e in r.errors if not any(a in e for a in ALLOWED_ERRORS)] for name, r in reports.items()}
    errors = {name: e for name, e in errors.items() if e}
    assert not errors, f"console errors: {errors}"


def test_math_is_typeset_by_the_vendored_mathjax(reports):
    with_math = {name: r for name, r in reports.items() if r.math}
    assert "book/00_welcome.html" in with_math, "the welcome chapter has display math; it was not found"
    for name, r in with_math.items():
        assert r.math["containers"] > 0, f"{name}: MathJax produced no output (offline MathJax not loaded?)"
        assert r.math["untypeset"] == 0, f"{name}: {r.math['untypeset']} math elements left as raw TeX"
        assert r.math["errors"] == 0, f"{name}: {r.math['errors']} MathJax errors (mjx-merror)"


def test_widgets_render_from_saved_state_and_jslink_works_offline(reports):
    with_widgets = {name: r for name, r in reports.items() if "widget-state+json" in r.source}
    assert "book/00_welcome.html" in with_widgets, "the welcome chapter lost its widget state"
    for name, r in with_widgets.items():
        assert r.widgets["sliders"] >= 1, f"{name}: no slider rendered"
        assert r.widgets["unrendered"] == 0, f"{name}: {r.widgets['unrendered']} widget views not rendered"
    before, after = with_widgets["book/00_welcome.html"].widgets["readout_index"]
    assert after == before + 1, "the jslinked readout did not follow the slider"


def test_exercises_with_hidden_dropdown_solutions(reports):
    chapters = {name: r for name, r in reports.items() if re.search(r"book/(0[1-9]|[1-9]\d)_", name)}
    for name, r in chapters.items():
        s = r.solutions
        assert s.get("exercises", 0) >= 3, f"{name}: expected at least 3 exercises, found {s.get('exercises', 0)}"
        assert s["dropdowns"] >= 1, f"{name}: no dropdown solution"
        assert s["hidden"] == s["dropdowns"], f"{name}: some solutions are visible before a click"
        assert s["opened_visible"], f"{name}: clicking the first solution did not show it"


def test_notebook_pages_offer_colab_and_download(reports):
    repo = _config()["repository"]
    org_repo = repo["url"].removeprefix("https://github.com/").rstrip("/")
    for name, r in reports.items():
        if not (REPO / name.replace(".html", ".ipynb")).is_file():
            continue
        colab = f"https://colab.research.google.com/github/{org_repo}/blob/{repo['branch']}/{name[:-5]}.ipynb"
        assert colab in r.links, f"{name}: no Colab launch link {colab}"
        assert any(link.endswith(f"_sources/{name[:-5]}.ipynb") for link in r.links), f"{name}: no .ipynb download"


def test_screenshots_saved(reports):
    for name, r in reports.items():
        assert r.screenshot is not None and r.screenshot.stat().st_size > 10_000, f"{name}: screenshot missing"


def test_chapter_7_explorer_and_static_fallback_and_chapter_10_tables(reports):
    """Chapter 7 must teach without a kernel: the slider explorer renders from saved state AND the static
    small-multiples figure is on the page; chapter 10 shows the paper's tables (and the estimates) as tables."""
    ch7 = reports["book/07_watching_wt.html"]
    assert ch7.widgets.get("sliders", 0) >= 1 and ch7.widgets.get("unrendered") == 0, ch7.widgets
    # figures saved by the build (the widget frames' own images live inside the widget state, not in _images/)
    figures = len(re.findall(r'<img[^>]+src="[^"]*_images/', ch7.source))
    assert figures >= 3, f"chapter 7 shows only {figures} figures (the static fallback figure is missing?)"
    ch10 = reports["book/10_gpu_rerun.html"]
    tables = ch10.source.count("<table")
    assert tables >= 4, f"chapter 10 shows {tables} tables; expected the paper's Tables 2-4 and the estimates"
    for name in ("GRU4Rec", "TTT4Rec", "gowalla", "amazon-video-games"):
        assert name in ch10.source, f"chapter 10's tables do not mention {name}"


def test_chapter_9_shows_the_committed_comparison_with_error_bars(reports):
    """Chapter 9 reads the committed Amazon Beauty results: the mean ± std table names every model, and the
    comparison, learning-curve and per-length figures are on the page."""
    ch9 = reports["book/09_cpu_training.html"]
    for name in ("Pop", "GRU4Rec", "NARM", "SASRec", "BERT4Rec", "Mamba4Rec", "TTT4Rec", "η = 0 at test"):
        assert name in ch9.source, f"chapter 9 does not mention {name}"
    assert ch9.source.count(" ± ") >= 7 * 4, "chapter 9's table lacks mean ± std for the 7 variants × 4 metrics"
    figures = len(re.findall(r'<img[^>]+src="[^"]*_images/', ch9.source))
    assert figures >= 4, f"chapter 9 shows only {figures} figures (comparison, curves, by length, differences)"


def test_no_display_equation_or_code_block_overflows_at_1280px(reports):
    """Issue 14, point 9: at a 1280-px window nothing is cut at the right edge or needs horizontal scrolling."""
    overflowing = {name: r.overflow for name, r in reports.items() if r.overflow}
    for name, items in overflowing.items():
        print(name, *items, sep="\n  ")
    assert not overflowing, f"wider than their container at 1280 px: {overflowing}"


def test_every_figure_has_a_caption_or_a_sentence_that_reads_it(reports):
    total = sum(r.figures.get("count", 0) for r in reports.values())
    assert total >= 20, f"only {total} figures found in the whole book: is the figure detection broken?"
    unread = {name: r.figures["missing"] for name, r in reports.items() if r.figures.get("missing")}
    for name, items in unread.items():
        print(name, *items, sep="\n  ")
    assert not unread, f"figures with neither a caption nor a sentence after them: {unread}"


def test_check_your_understanding_in_chapters_0_to_8_with_hidden_answers(reports):
    for number in range(9):
        name = next((n for n in reports if re.match(rf"book/{number:02d}_", n)), None)
        assert name is not None, f"chapter {number} was not built"
        quiz = reports[name].quiz
        assert quiz["boxes"] >= 1, f"{name}: no 'Check your understanding' box"
        assert quiz["answers"] == quiz["boxes"], f"{name}: a question box without its hidden answers"
        assert quiz["shown"] == 0, f"{name}: {quiz['shown']} answer boxes are open before a click"
