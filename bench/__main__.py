"""``python -m bench``: limit vs peer vs agent on one machine, in one run (see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from agent.errors import EX_USAGE
from bench.options import add_arguments
from bench.report import render
from bench.runner import BenchSettings, run_benchmark, stderr_log


def settings_from(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(work=args.work, models=tuple(args.models), frames=args.frames, threads=args.threads,
                         agent_threads=args.agent_threads,
                         repeat=args.repeat, max_repeat=max(args.max_repeat, args.repeat), target=args.target,
                         precision=args.precision, overlap=not args.no_overlap,
                         switch_interval_ms=args.switch_interval_ms, legacy_format=args.legacy_format,
                         capacity_frames=args.capacity_frames, infer_ms=tuple(args.infer_ms),
                         capacity_pipelines=tuple(args.pipelines), capacity_rounds=args.capacity_rounds,
                         drain_results=args.drain_results,
                         first_frame=not args.no_first_frame)


def run_from_args(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        settings.check()
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EX_USAGE
    doc = run_benchmark(settings, stderr_log)
    print(render(doc), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
