"""`python -m teachwhy.report.screenshot EXP_DIR OUT.png [--width W] [--height H] [--fragment F]`:
write an experiment's report into a temporary directory (EXP_DIR is not changed) and save a PNG of
report.html as headless Chromium renders it."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from teachwhy.errors import UserError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m teachwhy.report.screenshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("exp_dir", type=Path, help="an experiment directory (spec.json, analysis.json, ...)")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1800)
    ap.add_argument("--fragment", default=None, help="URL fragment, e.g. 'arm=reasoning&family=leak'")
    args = ap.parse_args(argv)
    from teachwhy.report import write_report
    from teachwhy.report.browser import screenshot

    try:
        with tempfile.TemporaryDirectory(prefix="teachwhy-report-") as tmp:
            paths = write_report(args.exp_dir, out_dir=Path(tmp))
            out = screenshot(paths["html"], args.out, args.width, args.height, args.fragment)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
