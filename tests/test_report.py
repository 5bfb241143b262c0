"""`write_report`: one self-contained HTML file per run, read as text and in a headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageStat

from gankit.cli import main
from gankit.report import duration, fmt, pick_grids, train_seconds, write_report
from gankit.utils import GankitError, read_jsonl
from tests.conftest import TINY, image_overrides

PAYLOAD = "<script>window.pwned=1</script>"  # a config string that must stay inert text


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


class Page(HTMLParser):
    """What the tests look at in a report: <img> srcs, every href/src, tables as lists of rows."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table_after(self, heading: str) -> list[dict[str, str]]:
        """Rows (column -> cell text) of the first table whose first column is `heading`."""
        for t in self.tables:
            if t and t[0][0] == heading:
                return [dict(zip(t[0], row, strict=True)) for row in t[1:]]
        raise AssertionError(f"no table starting with column {heading!r}")


def decode_images(page: Page) -> list[Image.Image]:
    """Every <img> of the page, decoded from its data: URI (fails on anything else)."""
    out = []
    for src in page.imgs:
        assert src.startswith(("data:image/png;base64,", "data:image/gif;base64,")), src[:40]
        mime, b64 = src[5:].split(";base64,")
        img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        img.load()
        assert img.format == mime.split("/")[1].upper() and img.width > 0 and img.height > 0
        out.append(img)
    return out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny ring run, evaluated twice (two eval rows), plotted, with a hostile config string."""
    run = tmp_path_factory.mktemp("report") / "toy"
    args = ["train", "toy_ring", "--run-dir", str(run), *_sets([*TINY, f"data.root={PAYLOAD}"])]
    assert main(args) == 0
    for seed in ("0", "1"):
        assert main(["eval", str(run), "--seed", seed, "--n", "256"]) == 0
    assert main(["plot", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny DCGAN on generated grey-blob PNGs, 17 snapshots (more than the report shows)."""
    tmp = tmp_path_factory.mktemp("report_img")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :20]
    for i in range(24):
        cy, cx = rng.uniform(5, 15, 2)
        img = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12)
        (tmp / "blobs").mkdir(exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(tmp / "blobs" / f"{i:02d}.png")
    overrides = [*image_overrides(tmp / "blobs", tmp / "cache"), "data.channels=1", "data.batch_size=4",
                 "model.z_dim=4", "train.steps=16", "train.log_every=4", "train.sample_every=1",
                 "train.sample_n=4", "train.dstats_n=4", "train.ckpt_every=16"]  # fmt: skip
    run = tmp / "run"
    assert main(["train", "dcgan_mnist", "--run-dir", str(run), *_sets(overrides)]) == 0
    assert main(["eval", str(run), "--metrics", "dstats"]) == 0
    return run


@pytest.fixture(scope="module")
def reports(toy_run, image_run):
    return {"toy": write_report(toy_run), "image": write_report(image_run)}


def test_report_is_one_self_contained_file(reports):
    for name, path in reports.items():
        assert path.name == "report.html" and path.is_file()
        text = path.read_text(encoding="utf-8")
        page = Page(text)
        assert page.links == page.imgs, name  # no stylesheet, script, font or page links at all
        assert "http" not in "".join(page.links) and "url(" not in text and "@import" not in text
        images = decode_images(page)
        gifs = [im for im in images if im.format == "GIF"]
        assert len(gifs) == 1 and gifs[0].n_frames >= 2  # animated, embedded as image/gif
        assert 50_000 < path.stat().st_size < 3_000_000, (name, path.stat().st_size)


def test_toy_report_has_its_plots_config_and_header(toy_run, reports):
    text = reports["toy"].read_text(encoding="utf-8")
    page = Page(text)
    assert len(page.imgs) == 6  # losses, dstats, scatter, density, decision, samples.gif
    for plot in ("losses.png", "dstats.png", "scatter", "density", "decision"):
        assert f"<figcaption>{plot}</figcaption>" in text
    header = dict(page.tables[0])
    assert header["dataset"] == "ring" and header["steps trained"] == "8 of 8"
    assert header["model"] == "mlp (loss nonsaturating)"
    assert header["wall time"].endswith("s (training, from metrics.jsonl)")
    assert "hidden: [16, 16]" in text and "batch_size: 16" in text  # the resolved config
    env = json.loads((toy_run / "env.json").read_text())
    assert f"<td>{html.escape(env['cpu'])}</td>" in text and "torch_threads" in text


def test_config_strings_are_escaped(toy_run, reports):
    text = reports["toy"].read_text(encoding="utf-8")
    assert PAYLOAD not in text and "<script" not in text
    assert html.escape(PAYLOAD) in text
    odd = toy_run.parent / "a<b>&c"  # the run name is escaped too (title and heading)
    shutil.copytree(toy_run, odd)
    text = write_report(odd).read_text(encoding="utf-8")
    assert "<b>" not in text and "<h1>a&lt;b&gt;&amp;c</h1>" in text


def test_eval_table_has_one_row_per_record_with_protocol(toy_run, reports):
    records = read_jsonl(toy_run / "eval.jsonl")
    rows = Page(reports["toy"].read_text(encoding="utf-8")).table_after("modes")
    assert len(rows) == len(records) == 2
    for row, rec in zip(rows, records, strict=True):
        assert row["reverse_kl"] == f"{rec['reverse_kl']:.4g}" and row["modes"] == str(rec["modes"])
        for key in ("n_fake", "seed", "floor", "step", "gankit_version", "time"):
            assert row[key] == fmt(rec[key]), key
    assert [r["seed"] for r in rows] == ["0", "1"] and rows[0]["floor"] == "false"
    cols = list(rows[0])
    assert cols.index("high_quality") < cols.index("n_fake") < cols.index("time")  # values first


def test_eval_protocol_values_are_shortened(toy_run, tmp_path):
    run = shutil.copytree(toy_run, tmp_path / "run")
    sha = "ab12" * 16
    rec = {"metric": "fid", "fid": 123.456789, "n_fake": 10000, "n_real": 10000,
           "reference": "test", "seed": 0, "floor": True, "extractor": "inception-v3-compat",
           "weights_sha256": sha, "step": 8, "gankit_version": "0.1.0",
           "time": "2026-01-01T00:00:00"}  # fmt: skip
    with open(run / "eval.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    (row,) = Page(write_report(run).read_text(encoding="utf-8")).table_after("fid")
    assert row["fid"] == "123.5" and row["weights_sha256"] == sha[:12] and row["floor"] == "true"
    assert list(row)[1:] == [k for k in rec if k not in ("metric", "fid")]


def test_image_report_shows_thinned_snapshot_strip(image_run, reports):
    text = reports["image"].read_text(encoding="utf-8")
    captions = [int(c) for c in _between(text, "<figcaption>step ", "</figcaption>")]
    assert len(sorted((image_run / "samples").glob("*.png"))) == 17
    assert captions == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16]  # 12 evenly spaced + the last
    rows = Page(text).table_after("train_mean")
    assert len(rows) == 1 and rows[0]["n_real"] == "4" and rows[0]["reference"] == "train+test"
    assert "real images" in text and "image/gif" in text


def _between(text: str, start: str, end: str) -> list[str]:
    return [part.split(end, 1)[0] for part in text.split(start)[1:]]


def test_missing_plots_are_made_first(image_run, tmp_path):
    run = shutil.copytree(image_run, tmp_path / "run")
    shutil.rmtree(run / "plots")
    text = write_report(run).read_text(encoding="utf-8")
    assert (run / "plots" / "samples.gif").is_file() and (run / "plots" / "dstats.png").is_file()
    assert "<figcaption>dstats.png</figcaption>" in text and "data:image/gif;base64," in text


def test_missing_pieces_say_none_yet(toy_run, tmp_path):
    run = shutil.copytree(toy_run, tmp_path / "run")
    for sub in ("plots", "samples", "checkpoints"):
        shutil.rmtree(run / sub)
    (run / "eval.jsonl").write_text("")
    (run / "env.json").unlink()
    text = write_report(run).read_text(encoding="utf-8")
    assert text.count("none yet") == 2  # samples, evaluation
    assert "plots could not be made" in text and "no checkpoints/last.pt" in text
    assert "no env.json" in text and "<figcaption>losses.png</figcaption>" in text
    decode_images(Page(text))


def test_run_before_its_first_log_line(toy_run, tmp_path):
    run = shutil.copytree(toy_run, tmp_path / "run")
    first = (run / "metrics.jsonl").read_text().splitlines()[0]  # step 0: observation only
    (run / "metrics.jsonl").write_text(first + "\n")
    shutil.rmtree(run / "plots")
    text = write_report(run).read_text(encoding="utf-8")
    assert not (run / "plots").exists()  # nothing to plot yet, and no attempt
    assert dict(Page(text).tables[0])["steps trained"] == "0 of 8" and "wall time" in text
    assert text.count("none yet") == 2 and Page(text).imgs == []  # curves, samples (eval: 2 rows)


def test_not_a_run_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(GankitError, match=r"no config.yaml \(is it a gankit run directory\?\)"):
        write_report(tmp_path)


def test_helpers():
    assert fmt(0.123456) == "0.1235" and fmt(1234567.0) == "1.235e+06" and fmt(3) == "3"
    assert fmt(True) == "true" and fmt(None) == "–" and fmt([0.5, 2]) == "[0.5, 2]"
    assert fmt(list(range(10))) == "[0, 1, 2, 3, … 10 values]"
    assert duration(None) == "unknown" and duration(12.34) == "12.3 s"
    assert duration(245) == "4 min 05 s" and duration(7385) == "2 h 03 min"
    # 2 steps at 1 it/s, then 2 at 2 it/s; the observation-only line (no it_s) adds nothing
    hist = [{"step": 0}, {"step": 2, "it_s": 1.0}, {"step": 3}, {"step": 4, "it_s": 2.0}]
    assert train_seconds(hist) == pytest.approx(3.0) and train_seconds([{"step": 0}]) is None
    assert train_seconds([{"step": 0, "time_s": 0.5}, {"step": 9, "time_s": 7.25}]) == 7.25
    paths = [Path(f"{i:06d}.png") for i in range(31)]
    picked = [int(p.stem) for p in pick_grids(paths)]
    assert picked == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30]
    assert pick_grids(paths[:13]) == paths[:13] and pick_grids([]) == []


# --- the report in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager would otherwise try to download one
    drv = webdriver.Chrome(options=opts, service=Service(driver))
    yield drv
    drv.quit()


@pytest.mark.browser
@pytest.mark.parametrize("name", ["toy", "image"])
def test_report_renders_in_headless_chromium(browser, reports, name):
    path = reports[name]
    browser.get(path.resolve().as_uri())
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    state = browser.execute_script(
        "return {n: document.images.length, bad: Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),"
        " pwned: window.pwned === undefined ? null : window.pwned, title: document.title}"
    )
    assert state["n"] == len(Page(path.read_text(encoding="utf-8")).imgs) > 0
    assert state["bad"] == [] and state["pwned"] is None
    assert state["title"] == f"gankit report: {path.parent.name}"
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 600
    grey = shot.convert("L")
    dark = sum(grey.histogram()[:128]) / (grey.width * grey.height)
    assert ImageStat.Stat(grey).stddev[0] > 10 and dark > 0.005  # text and plots, not a blank page
