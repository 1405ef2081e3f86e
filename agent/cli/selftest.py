"""``edge-agent selftest``: run the fault-injection scenarios (agent/faults/) on this machine and print
their figures: results lost and duplicated across broker restarts and ``kill -9``, cache consistency,
hostile inputs, full disks, SIGHUP storms, the watchdog.

Everything happens in a scratch directory with its own Mosquitto on free loopback ports; the
device's config.yaml, cache, spool and broker are never touched. Needs ``mosquitto``; the
cache-write kills need strace, the full-disk scenarios mount privileges (root): without them
those scenarios print "skipped" and why. A full run takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, TextIO

from agent.errors import EX_SOFTWARE, EX_UNAVAILABLE, AgentError


class SelftestUnavailable(AgentError):
    exit_code = EX_UNAVAILABLE


def configure_selftest_parser(parser: argparse.ArgumentParser) -> None:
    """Add the selftest's options to ``parser`` (the ``selftest`` sub-command) and set its handler."""
    parser.add_argument("--only", action="append", default=None, metavar="SCENARIO",
                        help="run only this scenario (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch directory (default: a new temporary one, removed when every scenario passed)")
    parser.set_defaults(func=run_selftest_command)


def run_selftest_command(args: argparse.Namespace) -> int:
    return run_selftest(args.only, args.list, args.workdir, sys.stdout)


def run_selftest(only: List[str] | None, list_only: bool, workdir: Path | None, out: TextIO) -> int:
    from agent.faults.catalog import SCENARIOS

    if list_only:
        for name, scenario in SCENARIOS.items():
            doc = (scenario.__doc__ or "").strip().splitlines()
            out.write(f"{name:<24} {doc[0] if doc else ''}\n")
        return 0
    names = list(only or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise AgentError(f"selftest: unknown scenario(s) {', '.join(unknown)}; `edge-agent selftest --list` "
                         "shows them")
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        raise SelftestUnavailable("selftest needs a local Mosquitto broker binary: install it "
                                  "(apt-get install mosquitto); it runs on a free loopback port, never on 1883")
    return _run(names, workdir, out)


def _run(names: List[str], workdir: Path | None, out: TextIO) -> int:
    from agent.demo.assets import ensure_assets
    from agent.faults.catalog import run_scenario
    from agent.faults.report import format_table
    from agent.faults.rig import FaultEnv

    work = workdir or Path(tempfile.mkdtemp(prefix="edge-agent-selftest-"))
    work.mkdir(parents=True, exist_ok=True)
    out.write(f"selftest: working in {work}; generating the demo model and data ...\n")
    out.flush()
    env = FaultEnv(work, ensure_assets(work / "assets"))
    results = []
    for name in names:
        result = run_scenario(name, env)
        results.append(result)
        out.write(format_table([result]) + "\n")
        out.flush()
    failed = [r.name for r in results if r.verdict == "FAILED"]
    skipped = [r.name for r in results if r.skipped is not None]
    out.write(f"selftest: {len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
              f"{len(skipped)} skipped\n")
    if failed:
        out.write(f"selftest: logs of the failed scenarios are under {work}\n")
        return EX_SOFTWARE
    if workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0

