"""Manifest changes after start-up: build → swap → grace → applied, or rollback.

Fleet updates and SIGHUP reloads both come here. One change runs at a time on a worker
thread while the old pipelines keep running; a change asked for meanwhile waits its turn,
and only the latest waiting one is kept (the one it displaces ends ``rejected``). Every
request ends in exactly one outcome — ``applied``, ``rolled_back`` or ``rejected`` — whatever
fails and however: the callback runs in ``finally``, with the error as the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from agent.logs import event
from agent.manifest.load import LoadedManifest
from agent.manifest.store import ManifestStore
from agent.service.runtime import ManifestRuntime, describe_error

log = logging.getLogger(__name__)

GRACE_TICK_S = 0.2
# How long past the grace period a new pipeline may take to publish its first result: a model's first
# inferences on a loaded Jetson (or a camera's first frame) can take seconds.
FIRST_RESULT_S = 30.0


@dataclass(frozen=True)
class SwapOutcome:
    ok: bool
    status: str  # "applied" | "rejected" | "rolled_back"
    reason: str = ""


SwapCallback = Callable[[SwapOutcome], None]
PhaseFn = Callable[[str], None]
# A new runtime for a manifest, every model and pipeline prepared or raising (``ManifestRuntime.prepare``
# with ``strict``); and the models of a stopped runtime with fresh pipelines (``ManifestRuntime.reopened``).
PrepareFn = Callable[[LoadedManifest], ManifestRuntime]
ReopenFn = Callable[[ManifestRuntime], ManifestRuntime]


@dataclass(frozen=True)
class _Request:
    loaded: LoadedManifest
    on_done: SwapCallback
    origin: str


class ManifestSwapper:
    """Owns the running ``ManifestRuntime`` from start-up on and every change to it."""

    def __init__(self, runtime: ManifestRuntime, prepare: PrepareFn, reopen: ReopenFn, store: ManifestStore,
                 grace_period_s: float, set_phase: PhaseFn, first_result_s: float = FIRST_RESULT_S) -> None:
        self.runtime = runtime
        self.first_result_s = first_result_s
        self.prepare = prepare
        self.reopen = reopen
        self.store = store
        self.grace_period_s = grace_period_s
        self.set_phase = set_phase
        self._lock = threading.Lock()
        self._waiting: Optional[_Request] = None
        self._worker: Optional[threading.Thread] = None
        self._closing = threading.Event()

    def submit(self, loaded: LoadedManifest, on_done: SwapCallback, origin: str = "fleet") -> None:
        """Queue ``loaded``; ``on_done`` is called exactly once, from the worker thread, when it ends."""
        request = _Request(loaded, on_done, origin)
        with self._lock:
            displaced, self._waiting = self._waiting, request
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="manifest-swap", daemon=True)
                self._worker.start()
        if displaced is not None:
            _complete(displaced, SwapOutcome(False, "rejected",
                                             f"superseded by manifest version {loaded.manifest.version}, "
                                             "which arrived while another swap was running"))

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking changes (a waiting one ends ``rejected``), let a running one end, then stop the
        pipelines and release the models."""
        self._closing.set()
        with self._lock:
            waiting, self._waiting = self._waiting, None
            worker = self._worker
        if waiting is not None:
            _complete(waiting, SwapOutcome(False, "rejected", "the agent stopped before this update was built"))
        if worker is not None:
            worker.join(timeout)
        self.runtime.close()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._worker is not None

    # worker -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                request, self._waiting = self._waiting, None
                if request is None:
                    self._worker = None
                    return
            outcome = SwapOutcome(False, "rolled_back", "the swap ended without an outcome")
            try:
                outcome = self._change(request.loaded, request.origin)
            except Exception as exc:  # a bug in the steps below still ends the attempt, visibly
                outcome = SwapOutcome(False, "rolled_back", f"swap failed: {describe_error(exc)}")
                log.debug("swap.crashed", exc_info=True)
            finally:
                if not self._closing.is_set():
                    self.set_phase("running")
                _complete(request, outcome)

    def _change(self, loaded: LoadedManifest, origin: str) -> SwapOutcome:
        version = loaded.manifest.version
        self.set_phase(f"building manifest v{version}")
        try:
            new = self.prepare(loaded)
        except Exception as exc:
            # The old pipelines never stopped: the device stays on (rolls back to) its previous manifest.
            event(log, logging.ERROR, "swap.rolled_back", version=version, error=describe_error(exc))
            return SwapOutcome(False, "rolled_back", f"build failed: {describe_error(exc)}")
        old = self.runtime
        old.stop()
        self.runtime = new
        try:
            new.start()
            problem = self._watch_grace(new)
            if problem is None:
                self.store.record_running(loaded, origin)
        except Exception as exc:  # e.g. the state disk filled up while recording the new manifest
            problem = describe_error(exc)
        if problem is None:
            old.close()
            event(log, logging.INFO, "swap.applied", version=version)
            return SwapOutcome(True, "applied")
        new.close()
        # The previous manifest's models are still loaded: only its pipelines are rebuilt.
        self.runtime = self.reopen(old)
        self.runtime.start()
        event(log, logging.ERROR, "swap.rolled_back", version=version, reason=problem)
        return SwapOutcome(False, "rolled_back", problem)

    def _watch_grace(self, runtime: ManifestRuntime) -> Optional[str]:
        """No pipeline may fail during the grace period, and each must publish a result (a camera that never
        connects is in backoff, not failed): waited for up to ``first_result_s`` beyond the period."""
        start = time.monotonic()
        while not self._closing.is_set():
            problem = runtime.healthy()
            if problem:
                return problem
            elapsed = time.monotonic() - start
            if elapsed >= self.grace_period_s:
                silent = runtime.silent()
                if silent is None or elapsed >= self.grace_period_s + self.first_result_s:
                    return silent
            self._closing.wait(GRACE_TICK_S)
        return runtime.healthy()


def _complete(request: _Request, outcome: SwapOutcome) -> None:
    try:
        request.on_done(outcome)
    except Exception:  # the caller's bug; the next request must still run
        log.exception("swap.callback_failed")
