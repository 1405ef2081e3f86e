"""``edge-agent fleet rollout``: one envelope to one group, in waves that stop a bad update.

The group's members come from the retained ``info`` documents. Each wave publishes the envelope
retained to its devices' own ``manifest/desired`` topics, waits until every one of them reports a
final state for it (or the timeout), then lets the devices that applied soak: they must stay
online and keep publishing results. Failures beyond ``max_failures`` abort the rollout; with
``rollback_on_abort`` the devices that applied get the previous manifest again, at a new version.
When every wave is through, the envelope is published retained to the group topic, so devices
that join later get it too.

State lives in the retained reports; a small journal (the plan, what was published, what soaked)
lets a re-run continue where an interrupted one stopped. docs/fleet.md#rollouts is the protocol.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from agent.errors import FleetError
from agent.fleet.envelope import Envelope, ModelFile, build_envelope, parse_envelope
from agent.fleet.publish import OperatorClient
from agent.fleet.view import DeviceView, FleetView
from agent.fsutil import atomic_write
from agent.logs import event

log = logging.getLogger(__name__)

POLL_S = 0.1
JOURNAL_SCHEMA = "edge-agent/rollout-journal/1"
# Outcomes the tool adds to the device's own (applied, rejected, rolled_back).
TIMEOUT = "timeout"
SOAK_FAILED = "soak_failed"
PENDING = "pending"
NOT_REACHED = "not_reached"


@dataclass(frozen=True)
class RolloutOptions:
    group: str
    canary: int = 1
    waves: Sequence[int] = (25, 50, 100)  # cumulative percent of the group
    max_failures: int = 0
    soak_s: float = 60.0
    timeout_s: float = 900.0
    rollback_on_abort: bool = False


def plan_waves(device_ids: Sequence[str], canary: int, waves: Sequence[int]) -> List[List[str]]:
    """Canary first, then cumulative percentages of the whole group; each device in exactly one wave."""
    ids = sorted(device_ids)
    plan: List[List[str]] = []
    done = 0
    if canary > 0:
        plan.append(ids[:canary])
        done = len(plan[0])
    for percent in waves:
        upto = max(done, min(len(ids), math.ceil(len(ids) * percent / 100.0)))
        if upto > done:
            plan.append(ids[done:upto])
            done = upto
    if done < len(ids):
        plan.append(ids[done:])
    return plan


@dataclass
class Journal:
    """``<path>``: this rollout's plan and progress; rewritten atomically after every step."""

    path: Path
    group: str
    version: int
    sha256: str
    plan: List[List[str]] = field(default_factory=list)
    published: Dict[str, float] = field(default_factory=dict)
    soaked: List[str] = field(default_factory=list)
    failed: Dict[str, Dict[str, str]] = field(default_factory=dict)
    previous: Optional[str] = None  # the envelope JSON to restore on abort
    state: str = "running"

    @classmethod
    def open(cls, path: Path, group: str, version: int, sha256: str) -> Journal:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, group, version, sha256)
        except (OSError, ValueError) as exc:
            raise FleetError(f"rollout journal {path}: unreadable ({exc}); move it away to start over") from None
        if (doc.get("group"), doc.get("version"), doc.get("sha256")) != (group, version, sha256):
            raise FleetError(f"rollout journal {path} belongs to group {doc.get('group')!r} version "
                             f"{doc.get('version')}, not this envelope; pass another --journal or remove it")
        return cls(path, group, version, sha256, plan=doc.get("plan") or [], published=doc.get("published") or {},
                   soaked=doc.get("soaked") or [], failed=doc.get("failed") or {}, previous=doc.get("previous"),
                   state=doc.get("state") or "running")

    def save(self) -> None:
        doc = {"schema": JOURNAL_SCHEMA, "group": self.group, "version": self.version, "sha256": self.sha256,
               "plan": self.plan, "published": self.published, "soaked": self.soaked, "failed": self.failed,
               "previous": self.previous, "state": self.state}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            raise FleetError(f"cannot write the rollout journal {self.path}: {exc.strerror or exc}") from None


@dataclass
class WaveReport:
    index: int
    devices: List[str]
    wall_s: float
    outcomes: Dict[str, str]


Resign = Callable[[Envelope, int], bytes]


class Rollout:
    def __init__(self, client: OperatorClient, view: FleetView, envelope: Envelope, payload: bytes,
                 options: RolloutOptions, journal: Journal, out: TextIO, resign: Optional[Resign] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.view = view
        self.envelope = envelope
        self.payload = payload
        self.options = options
        self.journal = journal
        self.out = out
        self.resign = resign
        self.clock = clock
        self.sleep = sleep
        self.waves: List[WaveReport] = []
        self.outcomes: Dict[str, Dict[str, str]] = {}
        self.published = 0  # messages this rollout published

    # the whole rollout ----------------------------------------------------------------------------------------
    def run(self) -> int:
        """0 when every member applied; 1 when the rollout aborted or some member did not apply."""
        members = [d.device_id for d in self.view.members(self.options.group)]
        if not members:
            raise FleetError(f"no device reports group {self.options.group!r} in its retained info document; check "
                             "--group, --prefix and that the agents are connected to this broker")
        if self.options.rollback_on_abort and self.resign is None:
            raise FleetError("--rollback-on-abort needs --key, to sign the previous manifest at a new version")
        self._plan(members)
        failures = {d: f for d, f in self.journal.failed.items()}
        aborted = False
        for index, wave in enumerate(self.journal.plan):
            report = self._wave(index, wave, failures)
            self.waves.append(report)
            self._say(f"wave {index + 1}/{len(self.journal.plan)}: {len(wave)} devices, {report.wall_s:.1f}s, "
                      f"failures so far {len(failures)} (max {self.options.max_failures})")
            if len(failures) > self.options.max_failures:
                aborted = True
                break
        if aborted:
            self.journal.state = "aborted"
            self.journal.save()
            self._say(f"aborted: {len(failures)} failures > --max-failures {self.options.max_failures}")
            if self.options.rollback_on_abort:
                self._roll_back()
            self._table()
            return 1
        self._publish(self.view.group_topic(self.options.group), self.payload)
        self._say(f"published version {self.envelope.version} retained to {self.view.group_topic(self.options.group)}")
        self.journal.state = "done"
        self.journal.save()
        self._table()
        applied = all(self._outcome(d)[0] == "applied" for d in members)
        return 0 if applied and not failures else 1

    def _plan(self, members: List[str]) -> None:
        if not self.journal.plan:
            self.journal.plan = plan_waves(members, self.options.canary, self.options.waves)
            self.journal.previous = self._previous_envelope()
        else:
            planned = {d for wave in self.journal.plan for d in wave}
            joined = [d for d in members if d not in planned]
            if joined:  # members that appeared since the plan was made go with the last wave
                self.journal.plan[-1].extend(joined)
            self._say(f"resuming the rollout of version {self.envelope.version} from {self.journal.path}")
        self.journal.save()

    def _previous_envelope(self) -> Optional[str]:
        """The group's retained envelope before this rollout: what ``--rollback-on-abort`` restores."""
        current = self.view.group_envelope(self.options.group)
        if current is None:
            return None
        try:
            env = parse_envelope(current)
        except FleetError:
            return None
        return current.decode("utf-8") if env.version < self.envelope.version else None

    # one wave --------------------------------------------------------------------------------------------------
    def _wave(self, index: int, wave: List[str], failures: Dict[str, Dict[str, str]]) -> WaveReport:
        started = self.clock()
        version, sha = self.envelope.version, self.envelope.sha256
        pending: List[str] = []
        for device_id in wave:
            if device_id in failures:
                continue
            # Published by an earlier run of this rollout, or already running it: wait (and soak) only.
            if device_id not in self.journal.published and self._dev(device_id).applied != (version, sha):
                self._publish(self.view.desired_topic(device_id), self.payload)
                self.journal.published[device_id] = time.time()
            pending.append(device_id)
        self.journal.save()
        self._subscribe_results(pending)
        try:
            deadline = self.clock() + self.options.timeout_s
            waiting = set(pending)
            while waiting and self.clock() < deadline:
                waiting = {d for d in waiting if self._device_outcome(d) is None}
                if waiting:
                    self.sleep(POLL_S)
            for device_id in sorted(waiting):
                failures[device_id] = {"status": TIMEOUT, "reason": f"no final state within {self.options.timeout_s:g}s"
                                       + ("" if self._online(device_id) else " (device offline)")}
            applied = []
            for device_id in pending:
                outcome = self._device_outcome(device_id)
                if outcome is None:
                    continue
                if outcome[0] == "applied":
                    applied.append(device_id)
                else:
                    failures[device_id] = {"status": outcome[0], "reason": outcome[1]}
            self._soak([d for d in applied if d not in self.journal.soaked], failures)
        finally:
            self._unsubscribe_results(pending)
        self.journal.failed = dict(failures)
        self.journal.save()
        return WaveReport(index, wave, self.clock() - started, {d: self._outcome(d)[0] for d in wave})

    def _soak(self, devices: List[str], failures: Dict[str, Dict[str, str]]) -> None:
        if not devices:
            return
        baseline = {d: self._results(d) for d in devices}
        if self.options.soak_s > 0:
            self.sleep(self.options.soak_s)
        version, sha = self.envelope.version, self.envelope.sha256
        for device_id in devices:
            dev = self.view.device(device_id)
            if dev is None or dev.applied != (version, sha):
                failures[device_id] = {"status": SOAK_FAILED, "reason": "no longer runs this version after the soak"}
            elif not dev.online:
                failures[device_id] = {"status": SOAK_FAILED, "reason": f"went {dev.status} during the soak"}
            elif self.options.soak_s > 0 and self._results(device_id) <= baseline[device_id]:
                failures[device_id] = {"status": SOAK_FAILED,
                                       "reason": f"published no results during the {self.options.soak_s:g}s soak"}
            else:
                self.journal.soaked.append(device_id)

    # abort -------------------------------------------------------------------------------------------------------
    def _roll_back(self) -> None:
        assert self.resign is not None
        if self.journal.previous is None:
            self._say("rollback: no previous envelope is retained on the group topic; nothing to restore")
            return
        previous = parse_envelope(self.journal.previous.encode("utf-8"))
        version = self.envelope.version + 1
        payload = self.resign(previous, version)
        running = (self.envelope.version, self.envelope.sha256)
        applied = [d for wave in self.journal.plan for d in wave
                   if d in self.journal.published and self._dev(d).applied == running]
        restored = parse_envelope(payload)
        for device_id in applied:
            self._publish(self.view.desired_topic(device_id), payload)
        deadline = self.clock() + self.options.timeout_s
        while self.clock() < deadline and any(self._dev(d).outcome(version, restored.sha256) is None for d in applied):
            self.sleep(POLL_S)
        for device_id in applied:
            outcome = self._dev(device_id).outcome(version, restored.sha256)
            state = outcome[0] if outcome else TIMEOUT
            self._say(f"rollback {device_id}: previous manifest (version {previous.version}) as version {version}: "
                      f"{state}")
            self.outcomes[device_id] = {"status": f"restored:{state}", "reason": ""}

    # helpers -----------------------------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload)
        self.published += 1

    def _dev(self, device_id: str) -> DeviceView:
        return self.view.device(device_id) or DeviceView(device_id)

    def _device_outcome(self, device_id: str) -> Optional[Tuple[str, str]]:
        return self._dev(device_id).outcome(self.envelope.version, self.envelope.sha256)

    def _outcome(self, device_id: str) -> Tuple[str, str]:
        if device_id in self.journal.failed:
            f = self.journal.failed[device_id]
            return f["status"], f["reason"]
        outcome = self._device_outcome(device_id)
        if outcome is not None:
            return outcome
        return (PENDING, "") if device_id in self.journal.published else (NOT_REACHED, "")

    def _online(self, device_id: str) -> bool:
        return self._dev(device_id).online

    def _results(self, device_id: str) -> int:
        return self._dev(device_id).results

    def _subscribe_results(self, devices: List[str]) -> None:
        filters = self.view.results_filters(devices)
        for start in range(0, len(filters), 100):
            self.client.subscribe(filters[start:start + 100])

    def _unsubscribe_results(self, devices: List[str]) -> None:
        filters = self.view.results_filters(devices)
        for start in range(0, len(filters), 100):
            self.client.unsubscribe(filters[start:start + 100])

    def rows(self) -> List[Dict[str, Any]]:
        wave_of = {d: i + 1 for i, wave in enumerate(self.journal.plan) for d in wave}
        rows = []
        for device_id in sorted(wave_of):
            status, reason = self._outcome(device_id)
            extra = self.outcomes.get(device_id)
            applied = self._dev(device_id).applied
            rows.append({"device": device_id, "wave": wave_of[device_id], "outcome": status,
                         "restored": extra["status"] if extra else None,
                         "applied": None if applied is None else applied[0], "reason": reason})
        return rows

    def _table(self) -> None:
        self.out.write(f"{'device':<24} {'wave':>4} {'outcome':<12} {'applied':>7}  reason\n")
        for row in self.rows():
            outcome = row["outcome"] + (f" ({row['restored']})" if row["restored"] else "")
            reason = row["reason"].splitlines()[0][:100] if row["reason"] else ""
            applied = "-" if row["applied"] is None else str(row["applied"])
            self.out.write(f"{row['device']:<24} {row['wave']:>4} {outcome:<12} {applied:>7}  {reason}\n")
        self.out.flush()

    def _say(self, line: str) -> None:
        event(log, logging.INFO, "rollout.progress", detail=line)
        self.out.write(line + "\n")
        self.out.flush()


def resign_with(private_key: Any) -> Resign:
    """Sign ``previous``'s manifest again at ``version`` (its ``version:`` line rewritten to match)."""
    def resign(previous: Envelope, version: int) -> bytes:
        text, count = re.subn(r"(?m)^version:[ \t]*\d+[ \t]*$", f"version: {version}", previous.manifest, count=1)
        if count == 0:
            text = f"version: {version}\n{previous.manifest}"
        models: List[ModelFile] = list(previous.models)
        return build_envelope(text.encode("utf-8"), version, private_key, models, previous.target).to_json()
    return resign
