"""Results: spooled to disk first, then drained to the broker in sequence order, removed only once acknowledged.

Delivery is at-least-once. A message can arrive twice when a connection drops
after the broker received it but before its PUBACK reached us (paho resends it
with the DUP flag), or when the agent restarts between delivery and the spool
delete. Receivers dedupe by ``(device_id, seq)``. Within one topic the
messages arrive in ``seq`` order: after a reconnect nothing new is sent until
paho's resends of the earlier connection are acknowledged.

At most ``window`` results are in flight, and never more than the broker's
Receive Maximum minus ``STATE_HEADROOM``. A result the broker refuses for good
(MQTT v5 reason code, e.g. not authorized) is removed and counted in
``rejected``; one refused for now (quota exceeded) is sent again after ``retry_s``.

Cost per result: ``publish_many`` spools a pass of the post thread in one transaction and hands
the stored messages to the drain thread in memory, so while the drain keeps up it never reads
the spool back; only after an outage (or when it fell behind) does it read the backlog from disk,
in order. Acknowledged results are deleted in batches (``ack_batch`` of them, or after
``ack_delay_s``, or when nothing is in flight): a crash in between sends those few again, which
at-least-once delivery allows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Mapping, Sequence

from agent.logs import event
from agent.mqtt.link import ACKED, REFUSED, REJECTED, MessageProps, MqttLink, PublishTicket
from agent.mqtt.payloads import RESULT_SCHEMA, encode
from agent.mqtt.spool import Spool, SpooledMessage

log = logging.getLogger(__name__)

RESULT_PROPS = MessageProps(schema=RESULT_SCHEMA, content_type="application/json")
# QoS>0 slots below the broker's Receive Maximum left for status, manifest reported and events
STATE_HEADROOM = 4
# spooled messages kept in memory for the drain; beyond that it reads them back from the spool
FRESH_MAX = 4096


@dataclass(frozen=True)
class PublisherStats:
    spool_depth: int
    spool_bytes: int
    spool_dropped: int  # deleted unsent by the spool's size cap (lifetime, persisted)
    spool_oldest_age_s: float
    published: int  # acknowledged by the broker since start
    rejected: int  # refused for good by the broker (MQTT v5 reason code) and removed, since start
    in_flight: int
    last_error: str


@dataclass
class _Sent:
    message: SpooledMessage
    ticket: PublishTicket


class ResultPublisher:
    """``publish()`` from any pipeline thread; one drain thread owns everything sent to the link."""

    def __init__(self, spool: Spool, link: MqttLink, *, window: int = 100, poll_s: float = 1.0,
                 retry_s: float = 1.0, ack_batch: int = 256, ack_delay_s: float = 0.05) -> None:
        self.spool = spool
        self.link = link
        self.window = window
        self.ack_batch = ack_batch
        self.ack_delay_s = ack_delay_s
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-drain", daemon=True)
        # drain-thread state
        self._sent: Dict[int, _Sent] = {}
        self._resend: List[SpooledMessage] = []
        self._acked: List[int] = []  # acknowledged by the broker, not yet deleted from the spool
        self._acked_since = 0.0  # when the oldest of them was acknowledged
        self._cursor = 0
        self._clean_epoch = 0  # every message in _sent was published on this connection
        # filled by publishers and paho's thread, emptied by the drain (deque appends are thread-safe)
        self._fresh: Deque[SpooledMessage] = deque(maxlen=FRESH_MAX)
        self._done: Deque[int] = deque()
        self._room_wanted = False  # the drain waits for acknowledgements to free room in the window
        # counters: written by the drain thread, read by stats()
        self._published = 0
        self._rejected = 0
        self._last_error = ""
        link.add_listener(lambda _connected: self._wake.set())

    def start(self) -> None:
        self._thread.start()

    def publish(self, topic: str, payload: Mapping[str, Any], qos: int = 1, retain: bool = False) -> int:
        """Spool one result (committed before this returns) and wake the drain. The spool's sequence number is
        added to the payload as ``seq``; returns it. Raises PublishError for a payload JSON cannot carry."""

        seq = self.spool.append(topic, lambda n: encode({**payload, "seq": n}), qos, retain)
        self._wake.set()
        return seq

    def publish_many(self, topic: str, payloads: Sequence[Mapping[str, Any]], qos: int = 1,
                     retain: bool = False) -> List[int]:
        """``publish`` for several results in one spool transaction (all or none); returns the ``seq`` of
        those stored (the spool counts one over its byte cap as dropped)."""

        def render(payload: Mapping[str, Any]) -> Any:
            return lambda seq: encode({**payload, "seq": seq})

        stored = self.spool.append_many(topic, [render(p) for p in payloads], qos, retain)
        self._fresh.extend(stored)
        self._wake.set()
        return [m.seq for m in stored]

    def flush(self, timeout: float) -> bool:
        """Wait until every spooled result is acknowledged; False if some are still pending at ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.spool.depth() > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the drain thread. Unacknowledged results stay in the spool for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> PublisherStats:
        return PublisherStats(
            spool_depth=self.spool.depth(),
            spool_bytes=self.spool.size_bytes(),
            spool_dropped=self.spool.dropped,
            spool_oldest_age_s=round(self.spool.oldest_age_s(), 3),
            published=self._published,
            rejected=self._rejected,
            in_flight=len(self._sent),
            last_error=self._last_error,
        )

    # -- drain thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # the timeout is a safety net (and the retry and ack timers): tickets, new results and
                # connection changes all set _wake
                self._wake.wait(self._timeout())
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self._reap()
                    if self.link.connected:
                        self._fill()
                    self._delete_acked(force=not self._sent)
                    self._room_wanted = len(self._sent) >= self._window()
                    if self._room_wanted and self._done:
                        self._wake.set()  # acknowledged meanwhile, before the flag told paho's thread to wake us
                except Exception as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("publisher.drain_failed")
                    self._stop.wait(self._poll_s)
        finally:
            # a clean stop deletes what was acknowledged, so the next start does not send it again
            self._reap()
            self._delete_acked(force=True)

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = self._poll_s
        if self._resend:
            timeout = min(timeout, self._retry_at - now)
        if self._acked:
            timeout = min(timeout, self._acked_since + self.ack_delay_s - now)
        if self._sent:
            timeout = min(timeout, self.ack_delay_s)  # acknowledgements that did not wake the drain
        return max(0.0, timeout)

    def _reap(self) -> None:
        while self._done:
            seq = self._done.popleft()
            sent = self._sent.pop(seq, None)
            if sent is None:
                continue
            ticket = sent.ticket
            if ticket.outcome == ACKED:
                self._ack(seq)
                self._published += 1
            elif ticket.outcome == REJECTED:
                # retrying a refused message would block every result behind it forever
                self._ack(seq)
                self._rejected += 1
                self._last_error = f"broker rejected {sent.message.topic}: {ticket.reason}"
                event(log, logging.WARNING, "publisher.rejected", seq=seq, topic=sent.message.topic,
                      reason=ticket.reason, hint="check the broker ACL for this device")
            else:
                if ticket.outcome == REFUSED:
                    # e.g. quota exceeded: the broker is busy, resending at once would be refused again
                    self._retry_at = time.monotonic() + self._retry_s
                    self._last_error = f"broker refused {sent.message.topic} for now: {ticket.reason}"
                    event(log, logging.INFO, "publisher.refused", seq=seq, reason=ticket.reason)
                self._resend.append(sent.message)

    def _ack(self, seq: int) -> None:
        if not self._acked:
            self._acked_since = time.monotonic()
        self._acked.append(seq)

    def _delete_acked(self, force: bool) -> None:
        """Delete acknowledged results from the spool: in batches, or all now (``force``)."""
        if not self._acked:
            return
        due = len(self._acked) >= self.ack_batch or time.monotonic() - self._acked_since >= self.ack_delay_s
        if not (force or due):
            return
        try:
            self.spool.ack_many(self._acked)
            self._acked.clear()
        except sqlite3.Error as exc:
            # e.g. the disk is full: keep the acknowledged seqs and delete them on a later pass, so
            # they are neither resent in this process nor left behind at a clean stop.
            self._acked_since = time.monotonic()
            self._last_error = f"spool cannot record acknowledgements: {exc}"
            event(log, logging.WARNING, "publisher.ack_deferred", pending=len(self._acked), error=str(exc))

    def _fill(self) -> None:
        epoch = self.link.epoch
        if epoch != self._clean_epoch:
            for sent in self._sent.values():
                if sent.ticket.qos > 0 and sent.ticket.epoch != epoch and not sent.ticket.done():
                    # paho is resending this one from an earlier connection; anything sent now could overtake it
                    return
            self._clean_epoch = epoch  # from now on everything in _sent was published on this connection
        window = self._window()
        if self._resend:
            if time.monotonic() < self._retry_at:
                return
            self._resend.sort(key=lambda m: m.seq)
            while self._resend and len(self._sent) < window:
                self._send(self._resend.pop(0))
            if self._resend:
                return
        room = window - len(self._sent)
        if room <= 0:
            return
        for message in self._next(room):
            self._send(message)
            self._cursor = message.seq

    def _next(self, room: int) -> List[SpooledMessage]:
        """Up to ``room`` messages after the cursor, in order: from memory while they follow on from it,
        otherwise (after an outage, an overflow of the in-memory queue, a restart) from the spool."""
        out: List[SpooledMessage] = []
        expected = self._cursor + 1
        while self._fresh and len(out) < room:
            message = self._fresh[0]
            if message.seq < expected:
                self._fresh.popleft()  # already read from the spool
                continue
            if message.seq != expected:
                break
            out.append(self._fresh.popleft())
            expected += 1
        if len(out) < room and expected <= self.spool.last_seq:
            # messages the memory queue does not hold (or holds no longer) come from the disk
            out += self.spool.pending(room - len(out), after=expected - 1)
        return out

    def _window(self) -> int:
        # paho resends everything unacknowledged at once after a reconnect: that burst must fit the broker's quota
        return max(1, min(self.window, self.link.receive_maximum - STATE_HEADROOM))

    def _send(self, message: SpooledMessage) -> None:
        ticket = self.link.publish(message.topic, message.payload, message.qos, message.retain, RESULT_PROPS)
        self._sent[message.seq] = _Sent(message, ticket)
        seq = message.seq

        def done(ticket: PublishTicket) -> None:
            self._done.append(seq)
            # A success needs the drain only when it waits for room in the window (a backlog); otherwise the
            # next result, or the ack timer, reaps it (one wake per result instead of two).
            if ticket.outcome != ACKED or self._room_wanted or len(self._done) >= self.ack_batch:
                self._wake.set()

        ticket.add_done_callback(done)
