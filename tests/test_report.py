"""mtl report: the page's content from real runs, its validation analysis (cached, matching training's
numbers), its size, and the page itself in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import sample_rows, write_csv

pytestmark = pytest.mark.slow  # trains two runs (13 epochs) for its fixture, and drives a real Chromium

HOSTILE = '<script>alert("x")</script> & <b>bold</b> review'
SECTIONS = ("settings", "data", "curves", "best", "validation", "examples")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model):
    """Run 'a': 10 epochs on 150 rows (10 of them with no sentiment label), 30 held out; run 'b':
    3 epochs with another pooler, validated on 5 rows, one of them with HTML as its text (so it is
    among the 5 hardest examples shown). Tests copy a run before changing it."""
    from typer.testing import CliRunner

    from mtlcli.cli.app import app

    folder = tmp_path_factory.mktemp("report")
    rows = sample_rows(150)
    for row in rows[:10]:
        row[2] = ""
    data = write_csv(folder / "data.csv", rows)
    val_rows = sample_rows(155)[150:]
    val_rows[2][0] = HOSTILE
    val = write_csv(folder / "val.csv", val_rows)
    common = [str(data), "--model", tiny_model, "--batch-size", "16", "--lr-backbone", "1e-3", "--lr-heads", "3e-3",
              "--precision", "fp32", "--quiet", "--out", str(folder / "runs")]
    for name, extra in (("a", ["--epochs", "10", "--patience", "10"]), ("b", ["--epochs", "3", "--pooling", "cls", "--val", str(val)])):
        result = CliRunner().invoke(app, ["train", *common, "--name", name, *extra])
        assert result.exit_code == 0, result.output
    return folder


def copy_run(two_runs: Path, name: str, dest: Path) -> Path:
    shutil.copytree(two_runs / "runs" / name, dest / name, symlinks=True)
    return dest / name


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)]


def test_one_run_page_has_every_section_and_numbers_from_the_run(cli, two_runs, tmp_path):
    run = copy_run(two_runs, "a", tmp_path)
    result = cli("report", run, "-o", tmp_path / "a.html")
    assert result.exit_code == 0, result.output
    assert "a: scoring the validation set with the best checkpoint" in result.output
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="run-1-{section}"' in html
    assert 'id="comparison"' not in html
    # no network: no external resource, no script; every chart is a valid inline SVG
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html
    charts = images(html)
    assert len(charts) == 1 and ET.fromstring(charts[0]).tag.endswith("svg")
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_metrics"]
    assert f"Epoch <b>{summary['best_epoch']}</b>: validation loss <b>{best['val_loss']:.4f}</b>" in html
    assert "<td>epochs run</td><td>10 of 10</td>" in html and "<td>pooling</td><td>mean</td>" in html
    assert html.count('<table class="confusion">') == 2
    # the data: 150 rows split 120/30; 10 sentiment cells empty
    assert "<b>120</b> training rows, <b>30</b> validation rows" in html
    cache = json.loads((run / "validation.json").read_text())
    data = cache["data"]
    assert data["train"]["sentiment_label"]["unlabelled"] + data["val"]["sentiment_label"]["unlabelled"] == 10
    assert sum(data["train"]["class_label"]["labels"].values()) == 120


def test_validation_analysis_matches_training_and_is_cached(cli, two_runs, tmp_path):
    from mtlcli.reports.validation import validation_report

    run = copy_run(two_runs, "a", tmp_path)
    first, cached = validation_report(run, "cpu")
    assert not cached and (run / "validation.json").is_file()
    best = json.loads((run / "summary.json").read_text())["best_metrics"]
    for task in ("class_label", "sentiment_label"):
        r = first["tasks"][task]
        assert r["accuracy"] == pytest.approx(best[f"val_{task}_acc"], abs=1e-12)
        assert r["macro_f1"] == pytest.approx(best[f"val_{task}_f1"], abs=1e-9)
        assert r["loss"] == pytest.approx(best[f"val_{task}_loss"], rel=1e-4)
        assert sum(map(sum, r["confusion_matrix"])) == r["n"] == sum(c["support"] for c in r["per_class"].values())
        losses = [e["loss"] for e in r["hardest"]]
        assert losses == sorted(losses, reverse=True) and len(losses) == 5
        wrong = r["confidently_wrong"]
        assert all(e["predicted"] != e["true"] for e in wrong)
        assert [e["confidence"] for e in wrong] == sorted((e["confidence"] for e in wrong), reverse=True)
        n_wrong = r["n"] - sum(r["confusion_matrix"][i][i] for i in range(len(r["labels"])))
        assert len(wrong) == min(5, n_wrong)
    again, cached = validation_report(run, "cpu")
    assert cached and again == json.loads(json.dumps(first))

    # a new best checkpoint (as after a resume) makes the cache stale
    checkpoint = run / first["key"]["checkpoint"]
    checkpoint.write_bytes(checkpoint.read_bytes())
    _, cached = validation_report(run, "cpu")
    assert not cached
    result = cli("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 0 and "scoring the validation set" not in result.output


def test_two_runs_compare_settings_metrics_and_curves_and_stay_small(cli, two_runs, tmp_path):
    a, b = copy_run(two_runs, "a", tmp_path), copy_run(two_runs, "b", tmp_path)
    result = cli("report", a, b, "-o", tmp_path / "ab.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "ab.html").read_text(encoding="utf-8")
    comparison = html[html.index('id="comparison"'):html.index('id="run-1"')]
    assert "<td>pooling</td><td>mean</td><td>cls</td>" in comparison
    assert "<td>epochs</td><td>10</td><td>3</td>" in comparison
    assert "<td>lr_heads</td>" not in comparison  # the same in both: not a difference
    assert "class_label accuracy" in comparison and "sentiment_label macro-F1" in comparison
    assert html.count('<table class="confusion">') == 4  # every task of every run
    assert len(images(html)) == 3  # overlaid, and one per run
    for i in (1, 2):
        assert f'id="run-{i}-validation"' in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html  # text, never markup
    assert (tmp_path / "ab.html").stat().st_size < 2_000_000
    single = cli("report", a, "-o", tmp_path / "a.html")
    assert single.exit_code == 0 and (tmp_path / "a.html").stat().st_size < 2_000_000  # a 10-epoch run


def test_a_run_whose_data_moved_still_gets_a_page(cli, two_runs, tmp_path):
    import yaml

    run = copy_run(two_runs, "b", tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = str(tmp_path / "gone.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("report", run, "-o", tmp_path / "b.html")
    assert result.exit_code == 0, result.output
    assert "warning: b: no validation analysis" in result.output and "gone.csv: file not found" in result.output
    html = (tmp_path / "b.html").read_text()
    assert "Not available:" in html and 'id="run-1-curves"' in html


def test_bad_input_is_one_line(cli, two_runs, tmp_path):
    missing = cli("report", tmp_path / "nope")
    assert missing.exit_code == 2 and "error:" in missing.output and "no such run folder" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("epochs: 1\n")
    not_yet = cli("report", empty)
    assert not_yet.exit_code == 2 and "no epoch finished yet" in not_yet.output


def test_the_page_opens_in_headless_chromium_without_console_errors(cli, two_runs, tmp_path):
    import browser

    binary = browser.find_chromium()
    if binary is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    # the check itself must be able to fail: a page with a console error and a missing image
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="missing.png"><script>console.error("broken")</script>')
    _, problems = browser.load(binary, bad, "1")
    assert any("broken" in p for p in problems) and any("missing.png" in p for p in problems)

    a, b = copy_run(two_runs, "a", tmp_path), copy_run(two_runs, "b", tmp_path)
    assert cli("report", a, b, "-o", tmp_path / "ab.html").exit_code == 0
    seen, problems = browser.load(binary, tmp_path / "ab.html", """JSON.stringify({
        ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        confusion: document.querySelectorAll('table.confusion').length,
        images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
        text: document.body.innerText.includes('<script>alert')})""")
    assert problems == []
    seen = json.loads(seen)
    assert {"comparison", "comparison-settings", "comparison-metrics", "comparison-curves"} <= set(seen["ids"])
    assert {f"run-{i}-{s}" for i in (1, 2) for s in SECTIONS} <= set(seen["ids"])
    assert seen["confusion"] == 4
    assert seen["images"] == [True, True, True]  # every chart decoded and drawn
    assert seen["text"]  # the hostile example shows as text


def test_a_confusion_matrix_of_17_labels_stays_inside_its_card(cli, tiny_model, tmp_path):
    rows = [[row[0], f"topic-{i % 17 + 1:02d}"] for i, row in enumerate(sample_rows(170))]
    data = write_csv(tmp_path / "topics.csv", rows, header=["sentence", "topic"])
    result = cli("train", data, "--model", tiny_model, "--epochs", "1", "--precision", "fp32", "--quiet",
                 "--name", "topics", "--val-split", "0.3")
    assert result.exit_code == 0, result.output
    assert cli("report", tmp_path / "runs" / "topics", "-o", tmp_path / "topics.html").exit_code == 0
    html = (tmp_path / "topics.html").read_text(encoding="utf-8")
    assert html.count('<div class="scroll"><table class="confusion">') == html.count("<table class=\"confusion\">") == 1
    assert html.count('<th class="pred">') == 17
    assert re.search(r"\.scroll\{[^}]*overflow-x:auto", html)

    import browser

    binary = browser.find_chromium()
    if binary is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    # on a page 760 pixels wide (a laptop's half screen), where 17 columns cannot fit
    seen, problems = browser.load(binary, tmp_path / "topics.html", """(() => {
        document.querySelector('main').style.maxWidth = '760px';
        return JSON.stringify([...document.querySelectorAll('table.confusion')].map(t => {
            const card = t.closest('.card'), box = t.parentElement;
            const c = card.getBoundingClientRect(), b = box.getBoundingClientRect();
            return {table: box.scrollWidth, box: box.clientWidth, inside: b.left >= c.left && b.right <= c.right,
                    card: card.scrollWidth <= card.clientWidth}}))})()""")
    assert problems == []
    [matrix] = json.loads(seen)
    assert matrix["table"] > matrix["box"]  # wider than the card can show: it scrolls in its box
    assert matrix["inside"] and matrix["card"], matrix  # and nothing runs past the card
