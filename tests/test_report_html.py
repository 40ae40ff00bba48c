"""report.html opened in a real headless browser (Debian's chromium): the table is there, every
inlined picture decodes, the run links are relative, and a screenshot is taken."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.collect import collect_and_report
from tests.fake_runs import write_fake_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


class Page(html.parser.HTMLParser):
    """The parts of the rendered DOM the test looks at."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.rows: list[int] = []  # per table
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "table":
            self.rows.append(0)
        elif tag == "tr":
            self.rows[-1] += 1
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])


@pytest.fixture
def report(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    for job, (lr, act, acc) in enumerate([(0.001, "relu", 40.0), (0.01, "relu", 75.0), (0.001, "gelu", 45.0),
                                          (0.01, "gelu", 82.5)]):
        write_fake_run(sweep / str(job), {"lr": lr, "model": {"activation": act}}, acc,
                       overrides=[f"lr={lr}", f"model.activation={act}"])
    write_fake_run(sweep / "4", {"lr": 0.1, "model": {"activation": "<b>bold</b>"}}, None, status="failed",
                   error="ValueError: <script>alert(1)</script>")
    collect_and_report([sweep])
    return sweep / "report.html"


@needs_chromium
def test_the_report_renders_with_its_table_and_every_picture(report, tmp_path):
    proc = chromium("--virtual-time-budget=10000", "--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = Page()
    page.feed(proc.stdout)
    assert page.body.get("data-images-loaded") == "all", page.body  # set by the page once every <img> decoded
    assert page.body.get("data-image-count") == "2" and len(page.images) == 2
    assert all(src.startswith("data:image/png;base64,") for src in page.images)  # self-contained
    assert page.rows[0] == 6  # header + five runs
    assert page.rows[1] == 4 and "Which settings matter" in proc.stdout  # header + lr + relu, gelu
    assert page.links == ["3/", "1/", "2/", "0/", "4/"]  # best first, relative links to the run folders
    assert "<script>alert" not in proc.stdout and "&lt;script&gt;alert(1)&lt;/script&gt;" in proc.stdout
    assert "<b>bold</b>" not in proc.stdout
    for link in page.links:
        assert (report.parent / link).is_dir()
    shot = tmp_path / "report.png"
    proc = chromium("--window-size=1200,1600", f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "profile")
    assert proc.returncode == 0 and shot.stat().st_size > 10_000
