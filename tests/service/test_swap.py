"""ManifestSwapper: every request ends in exactly one outcome whatever raises, requests queue (latest wins),
and a rollback reuses the previous runtime's loaded models.

The runtimes here are recording stand-ins (``FakeRuntime``) so that any exception type can be raised at
any step; tests/fleet/test_fleet_e2e.py drives the same class inside the real daemon with Paddle models.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, cast

import pytest

from agent.service.swap import ManifestSwapper, SwapOutcome
from tests.mqtt.helpers import wait_until


@dataclass
class FakeRuntime:
    version: int
    problem: Optional[str] = None
    quiet: Optional[str] = None
    start_error: Optional[BaseException] = None
    events: List[str] = field(default_factory=list)
    reopened_from: Optional[FakeRuntime] = None

    @property
    def loaded(self) -> Any:
        return SimpleNamespace(manifest=SimpleNamespace(version=self.version))

    def start(self) -> None:
        self.events.append("start")
        if self.start_error is not None:
            raise self.start_error

    def stop(self) -> None:
        self.events.append("stop")

    def close(self) -> None:
        self.events.append("close")

    def healthy(self) -> Optional[str]:
        return self.problem

    def silent(self) -> Optional[str]:
        return self.quiet


class FakeStore:
    def __init__(self) -> None:
        self.recorded: List[int] = []
        self.error: Optional[BaseException] = None

    def record_running(self, loaded: Any, origin: str = "file") -> None:
        if self.error is not None:
            raise self.error
        self.recorded.append(loaded.manifest.version)


def loaded(version: int) -> Any:
    return SimpleNamespace(manifest=SimpleNamespace(version=version))


class Harness:
    def __init__(self, prepare: Callable[[Any], FakeRuntime], first_result_s: float = 0.1) -> None:
        self.first = FakeRuntime(1)
        self.store = FakeStore()
        self.outcomes: Dict[int, List[SwapOutcome]] = {}
        self.done = threading.Condition()

        def reopen(stopped: Any) -> Any:
            return FakeRuntime(stopped.version, reopened_from=stopped)

        self.swapper = ManifestSwapper(cast(Any, self.first), cast(Any, prepare), reopen, cast(Any, self.store),
                                       grace_period_s=0.05, set_phase=lambda phase: None,
                                       first_result_s=first_result_s)

    def submit(self, version: int) -> None:
        def on_done(outcome: SwapOutcome) -> None:
            with self.done:
                self.outcomes.setdefault(version, []).append(outcome)
                self.done.notify_all()

        self.swapper.submit(loaded(version), on_done)

    def outcome(self, version: int, timeout: float = 5.0) -> SwapOutcome:
        assert wait_until(lambda: version in self.outcomes, timeout), f"no outcome for version {version}"
        assert len(self.outcomes[version]) == 1, self.outcomes[version]
        return self.outcomes[version][0]

    @property
    def runtime(self) -> FakeRuntime:
        return cast(FakeRuntime, self.swapper.runtime)


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 29.0 PiB for an array"),
                                   ValueError("cannot convert float NaN to integer"),
                                   RecursionError("maximum recursion depth exceeded"),
                                   KeyError("inputs")])
def test_any_exception_while_building_ends_rolled_back_with_the_error_and_the_next_update_runs(
        error: BaseException) -> None:
    def prepare(manifest: Any) -> FakeRuntime:
        if manifest.manifest.version == 2:
            raise error
        return FakeRuntime(manifest.manifest.version)

    h = Harness(prepare)
    h.submit(2)
    bad = h.outcome(2)
    assert (bad.ok, bad.status) == (False, "rolled_back")
    assert bad.reason == f"build failed: {type(error).__name__}: {error}"
    assert h.runtime is h.first and h.first.events == []  # never stopped
    h.submit(3)
    assert h.outcome(3).status == "applied" and h.store.recorded == [3]


def test_the_state_disk_filling_during_the_grace_period_rolls_back_to_the_old_models() -> None:
    h = Harness(lambda manifest: FakeRuntime(manifest.manifest.version))
    h.store.error = OSError(errno.ENOSPC, "No space left on device")
    h.submit(2)
    out = h.outcome(2)
    assert out.status == "rolled_back" and "No space left on device" in out.reason
    # the previous runtime was stopped, not closed: its models serve the restored pipelines
    assert h.first.events == ["stop"]
    assert h.runtime.reopened_from is h.first and h.runtime.events == ["start"]
    h.store.error = None
    h.submit(3)
    assert h.outcome(3).status == "applied"


def test_an_unhealthy_new_runtime_is_closed_and_the_old_models_are_reused_not_loaded_again() -> None:
    news: List[FakeRuntime] = []

    def prepare(manifest: Any) -> FakeRuntime:
        news.append(FakeRuntime(manifest.manifest.version, problem="stills: cannot decode frame.png"))
        return news[-1]

    h = Harness(prepare)
    h.submit(2)
    out = h.outcome(2)
    assert (out.status, out.reason) == ("rolled_back", "stills: cannot decode frame.png")
    assert news[0].events == ["start", "close"] and h.first.events == ["stop"]
    assert h.runtime.reopened_from is h.first


def test_a_start_that_raises_rolls_back() -> None:
    h = Harness(lambda manifest: FakeRuntime(manifest.manifest.version, start_error=RuntimeError("thread")))
    h.submit(2)
    out = h.outcome(2)
    assert out.status == "rolled_back" and out.reason == "RuntimeError: thread"
    assert h.runtime.reopened_from is h.first


def test_a_newer_update_waits_its_turn_and_the_latest_waiting_one_wins() -> None:
    building, release = threading.Event(), threading.Event()

    def prepare(manifest: Any) -> FakeRuntime:
        if manifest.manifest.version == 2:
            building.set()
            release.wait(5)
        return FakeRuntime(manifest.manifest.version)

    h = Harness(prepare)
    h.submit(2)
    assert building.wait(5)
    h.submit(3)
    h.submit(4)
    superseded = h.outcome(3)
    assert (superseded.status, superseded.reason.split(",")[0]) == ("rejected", "superseded by manifest version 4")
    release.set()
    assert h.outcome(2).status == "applied" and h.outcome(4).status == "applied"
    assert h.store.recorded == [2, 4]
    assert wait_until(lambda: not h.swapper.busy)


def test_a_callback_that_raises_does_not_stop_the_next_request() -> None:
    h = Harness(lambda manifest: FakeRuntime(manifest.manifest.version))

    def broken(outcome: SwapOutcome) -> None:
        raise RuntimeError("caller bug")

    h.swapper.submit(loaded(2), broken)
    h.submit(3)
    assert h.outcome(3).status == "applied"


def test_close_rejects_a_waiting_request_and_closes_the_runtime() -> None:
    building, release = threading.Event(), threading.Event()

    def prepare(manifest: Any) -> FakeRuntime:
        building.set()
        release.wait(5)
        return FakeRuntime(manifest.manifest.version)

    h = Harness(prepare)
    h.submit(2)
    assert building.wait(5)
    h.submit(3)
    threading.Timer(0.2, release.set).start()
    h.swapper.close()
    assert h.outcome(3).status == "rejected"
    assert h.outcome(2).status in ("applied", "rolled_back")
    assert h.runtime.events[-1] == "close"


def test_a_pipeline_that_publishes_nothing_in_the_grace_period_rolls_back() -> None:
    """Defect 8: an update whose only camera never connects (in backoff, not failed) was applied."""
    h = Harness(lambda manifest: FakeRuntime(manifest.manifest.version, quiet="cam: no result from rtsp://x"))
    h.submit(2)
    out = h.outcome(2)
    assert (out.status, out.reason) == ("rolled_back", "cam: no result from rtsp://x")
    assert h.runtime.reopened_from is h.first


def test_a_first_result_arriving_after_the_grace_period_but_in_time_is_applied() -> None:
    runtimes: List[FakeRuntime] = []

    def prepare(manifest: Any) -> FakeRuntime:
        runtimes.append(FakeRuntime(manifest.manifest.version, quiet="cam: no result yet"))
        threading.Timer(0.3, lambda: setattr(runtimes[-1], "quiet", None)).start()
        return runtimes[-1]

    h = Harness(prepare, first_result_s=5.0)
    h.submit(2)
    assert h.outcome(2).status == "applied"
