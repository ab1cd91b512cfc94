"""Screenshot the demo page after one generation (docs/images/demo_page.png).

    .venv/bin/python jobs/serve.py --model-dir out/runs/finetune/final_model \
        --reconstructor out/runs/reconstructor/final_model --port 8000 &
    .venv/bin/python scripts/screenshot_demo.py --url http://127.0.0.1:8000 --out docs/images/demo_page.png

Drives the system's Chromium through Playwright, as tests/test_web.py does.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from playwright.sync_api import sync_playwright


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--prompt", default="a yellow rubber duck")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: no chromium on this machine (apt-get install chromium)", file=sys.stderr)
        return 1
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.goto(f"{args.url}/")
        page.wait_for_selector("#model-info:has-text('model')")
        page.fill("#prompt", args.prompt)
        page.fill("#steps", str(args.steps))
        if args.guidance is not None:
            page.fill("#guidance", str(args.guidance))
        page.click("#generate")
        page.wait_for_selector("#result:not([hidden])", timeout=600_000)
        page.click("#play")  # a still frame
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
