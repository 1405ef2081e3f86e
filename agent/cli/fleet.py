"""``edge-agent fleet keygen|sign|publish|status|rollout``: keys, signed envelopes, publishing, the fleet view.

These run on an operator's machine, not on the device: nothing here reads config.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, List, Set, Tuple

from agent.errors import EX_USAGE, FleetError
from agent.fleet.envelope import MAX_ENVELOPE_BYTES, TARGET_PATTERN, ModelFile, build_envelope, parse_envelope
from agent.fleet.keys import generate_private_key, key_id, load_private_key, private_pem, public_b64, public_pem
from agent.fleet.publish import BrokerTarget, OperatorClient, publish_retained
from agent.fleet.rollout import Journal, Rollout, RolloutOptions, resign_with
from agent.fleet.view import FleetView
from agent.fsutil import read_regular
from agent.hashing import sha256_file
from agent.manifest.config import DEVICE_ID_PATTERN, TOPIC_PREFIX_PATTERN
from agent.manifest.load import LoadedManifest, parse_manifest
from agent.manifest.problems import InvalidConfigError
from agent.mqtt.credentials import read_password
from agent.mqtt.topics import Topics

DEFAULT_KEY_NAME = "fleet-ed25519"
# Topics builds group topics from an instance; a group publish has no device of its own.
_OPERATOR = "fleet-operator"


def add_fleet_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fleet`` and its subcommands to ``edge-agent``'s subparsers; each sets ``func``."""
    fleet = subparsers.add_parser("fleet", help="signed manifest updates: keygen, sign, publish, status, rollout")
    sub = fleet.add_subparsers(dest="fleet_command", required=True)

    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair; prints the public key (base64)")
    p.add_argument("--out", type=Path, required=True, help="directory for <name>.key (mode 0600) and <name>.pub")
    p.add_argument("--name", default=DEFAULT_KEY_NAME, type=_name, help="file name stem (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="wrap a manifest in a signed envelope")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, help="private key from 'fleet keygen'")
    key.add_argument("--unsigned", action="store_true", help="no signature (devices with require_signature: false)")
    p.add_argument("--manifest", type=Path, required=True, help="the manifest YAML")
    p.add_argument("--version", type=int, default=None,
                   help="must equal the manifest's 'version' (default: that version)")
    p.add_argument("--model-sha", type=Path, action="append", default=[], metavar="PATH",
                   help="a model file the device must have with this file's sha256; repeatable. PATH must lie "
                        "under the manifest's directory, which stands for the device's first allowed_model_dirs")
    p.add_argument("--model-url", action="append", default=[], metavar="PATH=URL",
                   help="like --model-sha, and the device downloads the file from URL (http/https) when it is "
                        "missing or differs; the file's size is signed too; repeatable")
    p.add_argument("--target", type=_target, default=None, metavar="device:ID|group:NAME",
                   help="only this device or group may apply it")
    p.add_argument("--out", required=True, help="envelope JSON file, or - for stdout")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("publish", help="publish an envelope retained (QoS 1) to a device or a group")
    p.add_argument("--envelope", type=Path, required=True)
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--device", type=_topic_name)
    dest.add_argument("--group", type=_topic_name)
    _broker_options(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("status", help="one line per device from the fleet's retained info, status and reports")
    p.add_argument("--group", type=_topic_name, default=None, help="only members of this group")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument("--wait", type=float, default=3.0,
                   help="seconds to listen (health is not retained: fps and errors need one health interval)")
    _broker_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rollout", help="publish an envelope to a group in waves: canary first, stop on failures")
    p.add_argument("--envelope", type=Path, required=True)
    p.add_argument("--group", type=_topic_name, required=True)
    p.add_argument("--canary", type=int, default=1, help="devices in the first wave (default: %(default)s)")
    p.add_argument("--waves", type=_percentages, default=(25, 50, 100),
                   help="cumulative percent of the group per wave after the canary (default: 25,50,100)")
    p.add_argument("--max-failures", type=int, default=0, help="abort when more devices fail (default: 0)")
    p.add_argument("--soak-s", type=float, default=60.0,
                   help="seconds an updated device must stay online and publish results (default: %(default)s)")
    p.add_argument("--timeout-s", type=_positive, default=900.0,
                   help="seconds a wave's devices have to reach a final state (default: %(default)s)")
    p.add_argument("--rollback-on-abort", action="store_true",
                   help="on abort, publish the group's previous manifest (at a new version) to devices that applied")
    p.add_argument("--key", type=Path, default=None, help="private key, to sign that rollback envelope")
    p.add_argument("--journal", type=Path, default=None,
                   help="progress file for resuming (default: .edge-agent/rollouts/<group>-v<version>.json)")
    p.add_argument("--json", action="store_true", help="print the final per-device table as JSON")
    _broker_options(p)
    p.set_defaults(func=cmd_rollout)


def _broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", type=_prefix, default="edge", help="mqtt.topic_prefix of the devices")
    p.add_argument("--username", default=None)
    p.add_argument("--password-file", type=Path, default=None)
    p.add_argument("--tls-ca", type=Path, default=None, help="CA certificate (PEM): connect with TLS")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    p.add_argument("--timeout", type=_positive, default=10.0, help="seconds to wait for the broker")


# commands ------------------------------------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    private_path, public_path = out / f"{args.name}.key", out / f"{args.name}.pub"
    if not args.force:
        existing = [str(p) for p in (private_path, public_path) if p.exists()]
        if existing:
            raise FleetError(f"{', '.join(existing)} already exist; choose another --out or --name, "
                             "or pass --force to replace them (devices trusting the old key will reject new updates)")
    private = generate_private_key()
    public = private.public_key()
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(private_path, private_pem(private), 0o600)
        _write(public_path, public_pem(public), 0o644)
    except OSError as exc:
        raise FleetError(f"--out {out}: cannot write the key files ({exc.strerror or exc}); give a writable "
                         "directory") from None
    print(public_b64(public))
    print(f"key_id={key_id(public)} private={private_path} public={public_path}", file=sys.stderr)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    manifest_path: Path = args.manifest
    data = _read_input(manifest_path, "the manifest")
    loaded = _validated(data, manifest_path)
    version = loaded.manifest.version
    if args.version is not None and args.version != version:
        raise FleetError(f"--version {args.version} differs from the manifest's version {version}; "
                         f"set 'version: {args.version}' in {manifest_path}, or drop --version")
    models = [_model_file(p, manifest_path.parent) for p in args.model_sha]
    models += [_model_url(spec, manifest_path.parent) for spec in args.model_url]
    models += _manifest_files(loaded, manifest_path.parent, {m.path for m in models})
    private = load_private_key(args.key) if args.key is not None else None
    envelope = build_envelope(data, version, private, models, args.target)
    body = envelope.to_json()
    if args.out == "-":
        sys.stdout.buffer.write(body + b"\n")
    else:
        try:
            Path(args.out).write_bytes(body + b"\n")
        except OSError as exc:
            raise FleetError(f"--out {args.out}: cannot write the envelope ({exc.strerror or exc}); give a file "
                             "path in an existing, writable directory, or - for stdout") from None
    print(f"version={version} sha256={envelope.sha256} key_id={envelope.key_id or 'unsigned'} "
          f"models={len(models)} out={args.out}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    payload = _read_input(args.envelope, "the envelope")
    envelope = parse_envelope(payload)
    dest = f"device:{args.device}" if args.device else f"group:{args.group}"
    if envelope.target is not None and envelope.target != dest:
        raise FleetError(f"the envelope is for {envelope.target}, not {dest}; sign it again with --target {dest}")
    topics = Topics(args.prefix, args.device or _OPERATOR)
    topic = topics.manifest_desired if args.device else topics.group_manifest_desired(args.group)
    publish_retained(payload, topic, _broker(args))
    print(f"published version={envelope.version} topic={topic}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    view = FleetView(args.prefix)
    with OperatorClient(_broker(args), view.handle) as client:
        client.subscribe(view.filters())
        settle(view, args.wait)
    now = time.time()
    devices = view.members(args.group) if args.group else view.all()
    rows = [d.row(now) for d in devices]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"{'device':<24} {'online':<7} {'applied':>7} {'last attempt':<18} {'seen':>7} {'fps':>6} "
          f"{'errors':>6}  reason")
    for row in rows:
        attempt = row["last_attempt"] or {}
        last = f"v{attempt.get('version')} {attempt.get('status')}" if attempt else "-"
        seen = "-" if row["last_seen_s"] is None else f"{row['last_seen_s']:.0f}s"
        reason = (attempt.get("reason") or "").splitlines()[0][:80] if attempt.get("reason") else ""
        print(f"{row['device']:<24} {'yes' if row['online'] else (row['status'] or 'no'):<7} "
              f"{_dash(row['applied']):>7} {last:<18} {seen:>7} {_dash(row['fps']):>6} {_dash(row['errors']):>6}  "
              f"{reason}")
    print(f"{len(rows)} devices, {sum(1 for r in rows if r['online'])} online", file=sys.stderr)
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    payload = _read_input(args.envelope, "the envelope")
    envelope = parse_envelope(payload)
    if envelope.target is not None and envelope.target != f"group:{args.group}":
        raise FleetError(f"the envelope is for {envelope.target}, not group:{args.group}; sign it again with "
                         f"--target group:{args.group} (or without --target)")
    if args.rollback_on_abort and args.key is None:
        print("fleet rollout: --rollback-on-abort needs --key", file=sys.stderr)
        return EX_USAGE
    resign = resign_with(load_private_key(args.key)) if args.key is not None else None
    options = RolloutOptions(args.group, args.canary, args.waves, args.max_failures, args.soak_s, args.timeout_s,
                             args.rollback_on_abort)
    journal_path = args.journal or Path(".edge-agent") / "rollouts" / f"{args.group}-v{envelope.version}.json"
    journal = Journal.open(journal_path, args.group, envelope.version, envelope.sha256)
    view = FleetView(args.prefix)
    with OperatorClient(_broker(args), view.handle) as client:
        client.subscribe([*view.filters(), view.group_topic(args.group)])
        settle(view, 1.0)
        rollout = Rollout(client, view, envelope, payload, options, journal, sys.stderr, resign)
        code = rollout.run()
    if args.json:
        print(json.dumps({"exit": code, "waves": [{"devices": len(w.devices), "wall_s": round(w.wall_s, 2)}
                                                  for w in rollout.waves],
                          "messages": {"received": view.messages, "published": rollout.published},
                          "devices": rollout.rows()}, indent=1))
    return code


def settle(view: FleetView, wait_s: float, quiet_s: float = 0.5) -> None:
    """Listen ``wait_s``, and on until no retained message came for ``quiet_s`` (the stored state is all in),
    at most twice as long."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= 2 * wait_s or (elapsed >= wait_s and view.retained_idle_s() >= quiet_s):
            return
        time.sleep(0.05)


def _broker(args: argparse.Namespace) -> BrokerTarget:
    password = None
    if args.password_file is not None:
        if args.username is None:
            raise FleetError("--password-file needs --username")
        password = read_password(str(args.password_file), None, Path.cwd())
    return BrokerTarget(args.host, args.port, args.username, password, args.tls_ca, args.protocol, args.timeout)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _percentages(value: str) -> Tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--waves {value!r}: expected percentages like 25,50,100") from None
    if not numbers or any(n <= 0 or n > 100 for n in numbers) or list(numbers) != sorted(numbers):
        raise argparse.ArgumentTypeError(f"--waves {value!r}: rising percentages between 1 and 100, like 25,50,100")
    return numbers


# helpers ---------------------------------------------------------------------------------------------------
def _validated(data: bytes, path: Path) -> LoadedManifest:
    """The manifest loaded as the device loads a fleet update (``parse_manifest``), relative paths
    against its directory; what the device would reject is not signed."""
    try:
        return parse_manifest(data, path, base_dir=path.parent)
    except InvalidConfigError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise FleetError(f"{path} does not validate, not signed: {problems}") from None


def _manifest_files(loaded: LoadedManifest, manifest_dir: Path, listed: Set[str]) -> List[ModelFile]:
    """Every model and params file under the manifest's directory, hashed, so the device checks the files
    the manifest was signed with; files elsewhere (absolute device paths) can only be named by --model-sha."""
    found: List[ModelFile] = []
    for model in loaded.manifest.models:
        for name in (model.model, model.params):
            if name is None:
                continue
            rel = os.path.relpath(name, os.path.abspath(manifest_dir))
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):
                continue
            entry = _model_file(Path(name), manifest_dir)
            if entry.path not in listed:
                listed.add(entry.path)
                found.append(entry)
    return found


def _model_file(path: Path, manifest_dir: Path) -> ModelFile:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(manifest_dir))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise FleetError(f"--model-sha {path}: not under the manifest's directory {manifest_dir}; lay the files out "
                         "as on the device (relative to its first fleet.allowed_model_dirs entry)")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise FleetError(f"--model-sha {path}: cannot read it ({exc.strerror or exc})") from None
    return ModelFile(path=Path(rel).as_posix(), sha256=digest)


def _model_url(spec: str, manifest_dir: Path) -> ModelFile:
    path, sep, url = spec.partition("=")
    if not sep or not url.startswith(("http://", "https://")):
        raise FleetError(f"--model-url {spec!r}: expected PATH=URL with an http:// or https:// URL")
    local = _model_file(Path(path), manifest_dir)
    return local.model_copy(update={"url": url, "size": os.path.getsize(path)})


def _read_input(path: Path, what: str) -> bytes:
    """An operator's input file, bounded like what a device accepts: a FIFO or /dev/zero is refused, not read."""
    try:
        return read_regular(path, MAX_ENVELOPE_BYTES)
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds (got {text})")
    return value


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode: a private key must never exist world-readable, even briefly.
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # --force over an existing file: os.open's mode applies only to new files
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _matching(pattern: str, what: str) -> Any:
    def check(value: str) -> str:
        if not re.match(pattern, value):
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}")
        return value
    return check


_topic_name = _matching(DEVICE_ID_PATTERN, "name (lowercase letters, digits, '-'; at most 63)")
_prefix = _matching(TOPIC_PREFIX_PATTERN, "topic prefix")
_name = _matching(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", "key file name")
_target = _matching(TARGET_PATTERN, "target (device:ID or group:NAME)")

