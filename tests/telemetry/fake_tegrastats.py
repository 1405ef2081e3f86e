"""FAKE tegrastats for tests: replays recorded lines from a fixture file at ``--interval`` ms.

Real tegrastats exists only on L4T. This stand-in speaks the same command line
(``--interval N``) and prints the same one-line reports, so TegrastatsReader is exercised
through a real subprocess and pipe. ``--lines N`` exits after N lines, like a tegrastats
that died.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=int, default=1000, help="milliseconds between reports")
    parser.add_argument("--replay", required=True, help="file of recorded tegrastats lines")
    parser.add_argument("--lines", type=int, default=0, help="exit after this many lines (0: never)")
    args = parser.parse_args()
    with open(args.replay, encoding="utf-8") as f:
        recorded = [line.rstrip("\n") for line in f if line.strip()]
    for count, line in enumerate(itertools.cycle(recorded), start=1):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if args.lines and count >= args.lines:
            return 0
        time.sleep(args.interval / 1000.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
