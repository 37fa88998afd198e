"""Checks of a report folder: its references, its PNGs, and how headless Chromium renders it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Injected into a copy of the page: once everything has loaded, the body records, for each <img>,
# whether the browser decoded it.
PROBE = (
    "<script>addEventListener('load', () => { document.body.dataset.images = [...document.images]"
    ".map(i => (i.complete && i.naturalWidth > 0 ? 'ok:' : 'broken:') + i.getAttribute('src')).join('|'); });"
    "</script>"
)


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name in {"src", "href"}:
                self.references.append(value)
                if tag == "img":
                    self.images.append(value)


def references(html_text: str) -> tuple[list[str], list[str]]:
    """Every ``src``/``href`` of the page, and the ``<img>`` sources among them."""
    parser = _References()
    parser.feed(html_text)
    return parser.references, parser.images


def check_report_folder(folder: Path) -> list[str]:
    """Assert the page refers only to files beside it that exist, and every PNG decodes.

    Returns:
        The images the page shows.
    """
    index = folder / "index.html"
    assert index.is_file(), f"no index.html in {folder}"
    refs, images = references(index.read_text(encoding="utf-8"))
    assert images, "the report shows no pictures"
    for ref in refs:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.IGNORECASE), f"{ref!r} is not a local file"
        assert not ref.startswith(("/", "..")), f"{ref!r} leaves the report folder"
        assert (folder / ref).is_file(), f"index.html refers to {ref}, which is not in {folder}"
    for png in sorted(folder.glob("*.png")):
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            image.load()
            assert image.format == "PNG"
            assert min(image.size) >= 200, f"{png.name} is {image.size}"
    return images


def chromium() -> str:
    """The headless browser's executable; fails (never skips) when there is none."""
    if os.environ.get("FRUITS_TEST_TIER") == "unit":
        pytest.fail(
            "the unit tier starts no browser: this test belongs to the integration tier", pytrace=False
        )
    override = os.environ.get("CHROMIUM")
    found = override or next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if not found:
        pytest.fail(
            "Chromium is needed to check the report in a browser and was not found: "
            "install it (Debian: apt-get install -y chromium) or set CHROMIUM to its path"
        )
    return found


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def open_in_chromium(folder: Path, screenshot: Path, scratch: Path) -> None:
    """Load the report in headless Chromium: every image decodes, no console error, a screenshot.

    The image check runs on a copy of the page with :data:`PROBE` added, in the same folder so
    relative paths resolve the same way; the screenshot is of the page itself.
    """
    probe = folder / "_probe.html"
    probe.write_text(
        (folder / "index.html").read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
        encoding="utf-8",
    )
    try:
        dumped = _run_chromium(
            ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            scratch / "profile-dom",
        )
    finally:
        probe.unlink()
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], f"the page logged to the console: {console}"
    match = re.search(r'data-images="([^"]*)"', dumped.stdout)
    assert match, "the page's load event never fired"
    states = match.group(1).split("|")
    _, images = references((folder / "index.html").read_text(encoding="utf-8"))
    assert states == [f"ok:{src}" for src in images], f"images the browser could not show: {states}"

    shot = _run_chromium(
        [
            "--hide-scrollbars",
            "--window-size=1280,6000",
            f"--screenshot={screenshot}",
            (folder / "index.html").as_uri(),
        ],
        scratch / "profile-shot",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        image.load()
        assert image.size == (1280, 6000)
        # A blank page is one colour: the rendered report has text and pictures.
        colours = image.convert("RGB").resize((128, 600)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50
