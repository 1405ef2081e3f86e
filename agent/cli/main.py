"""``edge-agent``: validate, build, run, cache, fleet, selftest.

The benchmark is ``python -m bench`` from a checkout: it is not part of the installed package.

User-facing failures print one clear line per problem and exit with the error's code;
a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from agent import __version__
from agent.errors import EX_CONFIG, EX_SOFTWARE, AgentError
from agent.logs import setup_logging
from agent.progress import Progress

DEFAULT_CONFIG = "config.yaml"

Command = Callable[[argparse.Namespace], int]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG), help="agent config (default: %(default)s)")
    p.add_argument("--manifest", type=Path, default=None, help="model manifest (default: the config's manifest)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Deploy models to Jetson devices over MQTT.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log info events")
    parser.add_argument("--debug", action="store_true", help="log debug events and show tracebacks")
    parser.add_argument("--log-format", choices=("kv", "json"), default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check config and manifest; one line per problem")
    _common(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("build", help="prepare and cache every model's engines ahead of time")
    _common(p)
    p.add_argument("--model", action="append", default=None, help="only this model (repeatable)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("run", help="run the agent")
    _common(p)
    p.add_argument("--once", action="store_true",
                   help="process finite sources to the end, publish all, print a line per pipeline; 69 if one failed")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("cache", help="inspect or clean the engine cache")
    _common(p)
    p.add_argument("action", choices=("list", "verify", "prune"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dry-run", action="store_true", help="prune: only show what would be removed")
    p.set_defaults(func=_cmd_cache)

    from agent.cli.fleet import add_fleet_parser
    from agent.cli.selftest import configure_selftest_parser

    add_fleet_parser(sub)
    configure_selftest_parser(sub.add_parser("selftest", help="run the fault-injection scenarios, print their figures"))
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    from agent.service.checks import validate_deployment

    config = args.config if args.config.exists() or args.manifest is None else None
    report = validate_deployment(config, args.manifest)
    for problem in report.problems:
        print(str(problem), file=sys.stderr)
    if report.ok:
        print("valid", file=sys.stdout)
        return 0
    return EX_CONFIG


def _cmd_build(args: argparse.Namespace) -> int:
    from agent.service.runtime import describe_error
    from agent.service.wiring import Wiring

    wiring = Wiring.from_files(args.config, args.manifest)
    models = wiring.loaded.manifest.models
    wanted = set(args.model or [])
    unknown = wanted - {m.name for m in models}
    if unknown:
        names = ", ".join(m.name for m in models)
        print(f"build: unknown model(s) {', '.join(sorted(unknown))} (manifest has: {names})", file=sys.stderr)
        return EX_CONFIG
    failed = 0
    for spec in models:
        if wanted and spec.name not in wanted:
            continue
        try:
            prepared = wiring.preparer.prepare(spec, load=False, progress=_print_progress)
        except Exception as exc:  # one model's failure, whatever its type, is reported and the rest build
            failed += 1
            print(f"model={spec.name} result=failed error={json.dumps(describe_error(exc))}", flush=True)
            continue
        p = prepared.placement
        print(
            f"model={spec.name} cache={'hit' if prepared.hit else 'miss'} key={prepared.key} "
            f"device={p.device} precision={p.precision} route={p.route} time={prepared.seconds:.2f}s "
            f"requested={spec.target}/{prepared.precision}"
            + "".join(f" note={json.dumps(n)}" for n in p.notes),
            flush=True,
        )
    return EX_SOFTWARE if failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.service.wiring import run_daemon

    # config.yaml's log_level/log_format apply unless the command line chose.
    return run_daemon(args.config, args.manifest, once=args.once,
                      config_logging=not (args.verbose or args.debug or args.log_format))


def _cmd_cache(args: argparse.Namespace) -> int:
    from agent.cli.cache import run_cache_command

    return run_cache_command(args.config, args.manifest, args.action, as_json=args.json, dry_run=args.dry_run)


def _print_progress(progress: Progress) -> None:
    print(f"  .. {progress.line()}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Paddle warns about ccache on every import; it concerns building Paddle extensions, not us.
    warnings.filterwarnings("ignore", message="No ccache found")
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    setup_logging(level, args.log_format or "kv")
    func: Command = args.func
    try:
        return func(args)
    except AgentError as exc:
        if args.debug:
            raise
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"edge-agent: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line and a documented code, the traceback with --debug
        if args.debug:
            raise
        print(f"edge-agent: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return EX_SOFTWARE
