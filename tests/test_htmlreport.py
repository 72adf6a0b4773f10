"""The shared HTML report builder: escaping, self-containment, plots with data, a real browser."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlsys_cli import htmlreport as hr
from tests.browser import chromium, plots_in, render_dom, screenshot  # noqa: F401  (chromium is a fixture)

EVIL = '<script>alert("x")</script> & "quoted" \'single\''


def _page() -> hr.Report:
    rng = np.random.default_rng(0)
    fpr = np.r_[0.0, np.sort(rng.random(40)), 1.0]
    page = hr.Report(f"Report {EVIL}", subtitle=EVIL, footer="mlsys test")
    page.heading(EVIL).text(EVIL).kv({EVIL: 0.123456789, "rows": 12, "missing": None, "nan": float("nan")})
    page.figures(
        hr.line_plot([hr.Series(EVIL, fpr, np.sqrt(fpr))], title=EVIL, x_label="fpr", y_label="tpr",
                     x_range=(0, 1), y_range=(0, 1), diagonal=True, kind="roc"),
        hr.line_plot([hr.Series("pr", fpr, 1 - fpr, step=True, markers=True)], kind="pr", hline=0.3),
        hr.bar_chart([EVIL, "b", "c"], [0.8, 0.6, float("nan")], errors=([0.7, 0.5, None], [0.9, 0.7, None]),
                     reference=0.75, reference_label="overall", highlight=[False, True, False], kind="slices"),
        hr.heatmap([[5, 1], [2, 7]], ["no", EVIL], ["no", "yes"], kind="confusion"),
        hr.reliability_diagram([0.1, 0.5, 0.9], [0.12, 0.4, 0.95], [10, 5, 20]),
        hr.scatter_plot([hr.Series("c", [1e3, 1e4, 1e5], [0.8, 0.85, 0.86], labels=["a", EVIL, "c"])],
                        log_x=True, annotate=True, connect=True, kind="size"),
        hr.histogram([0, 1, 2, 3], [("ref", [1, 2, 3]), ("cur", [3, 2, 1])]),
        captions=[EVIL],
    )
    page.table([{"test": EVIL, "rate": 0.01, "passed": True}, {"test": "b", "rate": 0.5, "passed": False}], status="passed")
    page.table([{"slice": "a", "flagged": True}, {"slice": "b", "flagged": False}], flag="flagged")
    return page


def test_all_text_is_escaped():
    text = _page().to_html()
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


def test_self_contained_no_network_no_javascript():
    text = _page().to_html()
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", text))
    assert urls == {"http://www.w3.org"}, urls  # only the SVG namespace name, never fetched
    assert not re.search(r"<(script|link|img|iframe)\b", text)
    assert not re.search(r"\son\w+=", text)  # no event handlers
    assert "Content-Security-Policy" in text


def test_deterministic_bytes():
    assert _page().to_html() == _page().to_html()


def test_plots_report_their_data_marks():
    svg = hr.line_plot([hr.Series("a", [0, 1, 2], [1, float("nan"), 3])])
    assert svg.points == 2  # the non-finite pair is not drawn
    assert 'data-points="2"' in svg.markup
    assert hr.bar_chart(["a", "b"], [1.0, None]).points == 1


def test_long_curves_are_thinned_but_keep_their_end():
    x = np.linspace(0, 1, 20_000)
    svg = hr.line_plot([hr.Series("a", x, x**2)], x_range=(0, 1))
    assert svg.points <= hr.MAX_LINE_POINTS + 1
    last = re.search(r'<polyline[^>]* points="([^"]+)"', svg.markup).group(1).split()[-1]
    ax_right = hr.WIDTH - hr.MARGIN["right"]
    assert abs(float(last.split(",")[0]) - ax_right) < 1  # x = 1 is still drawn at the right edge


def test_table_formats_and_flags():
    page = hr.Report("t")
    page.table([{"a": 1.23456789, "b": None, "ok": True}, {"a": 2, "b": "x", "ok": False}], status="ok", flag="a")
    text = page.to_html()
    assert "1.235" in text and "\u2013" in text
    assert text.count('class="flag"') == 2 and "PASS" in text and "FAIL" in text


def test_figures_accept_only_generated_svg():
    with pytest.raises(TypeError):
        hr.Report("t").figures("<svg onload=alert(1)></svg>")


def test_degenerate_inputs_do_not_crash():
    for svg in (hr.line_plot([]), hr.line_plot([hr.Series("a", [1, 1], [2, 2])]), hr.bar_chart([], []),
                hr.scatter_plot([hr.Series("a", [], [])], log_x=True), hr.heatmap([], [], []),
                hr.reliability_diagram([], [], []), hr.histogram([0, 1], [("a", [0])])):
        assert svg.markup.startswith("<svg") and svg.markup.endswith("</svg>")


def test_tick_labels_are_round_numbers():
    assert hr._nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert hr._tick_label(1e4) == "1e4" and hr._tick_label(0.25) == "0.25"


def test_write_is_atomic_and_utf8(tmp_path):
    path = tmp_path / "r.html"
    _page().write(path)
    assert path.read_bytes().decode("utf-8") == _page().to_html()
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


@pytest.mark.browser
def test_renders_in_headless_chromium(chromium, tmp_path):  # noqa: F811
    path = tmp_path / "r.html"
    _page().write(path)
    dom = render_dom(chromium, path)
    plots = plots_in(dom)
    assert [p["kind"] for p in plots] == ["roc", "pr", "slices", "confusion", "reliability", "size", "histogram"]
    assert all(p["points"] > 0 and p["marks"] > 0 for p in plots), plots
    assert "<script" not in dom and "&lt;script&gt;" in dom  # the payload stayed text
    png = screenshot(chromium, path, tmp_path / "r.png", size=(1200, 1800))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
