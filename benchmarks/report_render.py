"""Check that an evaluation report.html renders in a real browser: headless Chromium, DOM dump and screenshot.

    python benchmarks/report_render.py results/zorbo/report.html [--out render.json]

It runs Debian's chromium (install it with `apt-get install -y chromium` if /usr/bin/chromium is missing),
offline and sandbox-free, twice: `--dump-dom` (the DOM after rendering: are the <img> tags there, with data
URIs, and the SVG plot?) and `--screenshot` (is the page non-blank?). Prints the result as JSON and writes it
next to the report (or to --out). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no chromium found; install it with `apt-get install -y chromium`")


def run_chromium(chromium: str, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_report(report: Path, width: int = 1200, height: int = 2400) -> dict:
    """Render `report` headless; return what the DOM holds and how busy the screenshot is."""
    chromium = find_chromium()
    url = report.resolve().as_uri()
    result: dict = {"report": str(report), "chromium": chromium, "bytes": report.stat().st_size}
    # 1. the DOM after rendering
    start = time.perf_counter()
    dom = run_chromium(chromium, ["--dump-dom", url])
    result["dump_dom_seconds"] = round(time.perf_counter() - start, 2)
    html = dom.stdout
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    result["dom"] = {
        "chars": len(html),
        "img_tags": len(sources),
        "img_png_data_uris": sum(s.startswith("data:image/png;base64,") for s in sources),
        "img_gif_data_uris": sum(s.startswith("data:image/gif;base64,") for s in sources),
        "img_external": sum(not s.startswith("data:") for s in sources),
        "svg_plots": html.count("<svg"),
        "tables": html.count("<table"),
        "has_threat_model": "Threat model" in html,
    }
    # 2. a screenshot: a rendered page with images has many distinct colours, a blank one has one
    with tempfile.TemporaryDirectory() as folder:
        shot = Path(folder) / "shot.png"
        start = time.perf_counter()
        run_chromium(chromium, [f"--screenshot={shot}", f"--window-size={width},{height}", url])
        result["screenshot_seconds"] = round(time.perf_counter() - start, 2)
        if shot.is_file():
            pixels = np.asarray(Image.open(shot).convert("RGB"))
            result["screenshot"] = {
                "size": [int(pixels.shape[1]), int(pixels.shape[0])],
                "distinct_colours": int(len(np.unique(pixels.reshape(-1, 3), axis=0))),
                "non_white_share": round(float((pixels < 250).any(-1).mean()), 4),
                "std": round(float(pixels.std()), 2),
            }
            keep = report.with_name("report_screenshot.png")
            try:
                shutil.copy(shot, keep)
                result["screenshot"]["path"] = str(keep)
            except OSError:
                pass
        else:
            result["screenshot"] = None
    checks = {
        "images_in_dom": result["dom"]["img_tags"] > 0 and result["dom"]["img_external"] == 0,
        "plot_in_dom": result["dom"]["svg_plots"] > 0 or "video" not in html.lower(),
        "threat_model_in_dom": result["dom"]["has_threat_model"],
        "screenshot_not_blank": bool(result["screenshot"]) and result["screenshot"]["distinct_colours"] > 50,
    }
    result["checks"] = checks
    result["ok"] = all(checks.values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report.html written by `t2v-unlearn eval`")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: render.json beside the report)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"{args.report} does not exist; pass the report.html of an evaluation")
    result = check_report(args.report)
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or args.report.with_name("render.json")
    try:
        out.write_text(text + "\n")
    except OSError as error:
        print(f"could not write {out}: {error}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
