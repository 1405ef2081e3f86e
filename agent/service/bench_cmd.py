"""``edge-agent bench``: the pipeline benchmark (limit vs peer vs agent), the same as ``python -m bench``.

The benchmark lives in the repository's ``bench/`` package, next to ``agent/``; it is importable when
the agent runs from a checkout or when the installed distribution includes it. Without it the command
says how to run it instead of failing with an import traceback.
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.errors import EX_USAGE, AgentError

_MISSING = ("edge-agent bench needs the benchmark package 'bench' from the agent's source tree, which this "
            "installation does not include: run `python -m bench` from a checkout of the repository (with this "
            "venv's python), or install the agent from a checkout that packages bench/")


class BenchUnavailable(AgentError):
    exit_code = EX_USAGE


def configure_bench_parser(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (the ``bench`` sub-command) and set its handler."""
    try:
        from bench.options import add_arguments
    except ImportError:
        # still a valid sub-command: running it explains what is missing
        parser.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    else:
        add_arguments(parser)
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    try:
        from bench.__main__ import run_from_args
    except ImportError:
        raise BenchUnavailable(_MISSING) from None
    code: Any = run_from_args(args)
    return int(code)
