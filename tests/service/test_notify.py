"""The sd_notify protocol against a real AF_UNIX datagram socket that the test owns, as systemd would."""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from agent.service.notify import Notifier

RECV_TIMEOUT_S = 2.0


class FakeClock:
    """Stands in for time.monotonic so the watchdog's pacing is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Receiver:
    """The service manager's end: a bound SOCK_DGRAM socket with SO_PASSCRED, like PID 1's."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(RECV_TIMEOUT_S)

    def recv(self) -> bytes:
        return self.recv_with_pid()[0]

    def recv_with_pid(self) -> Tuple[bytes, int]:
        """One datagram and the sender's pid as the kernel reports it (SCM_CREDENTIALS)."""
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
        return data, pid

    def pending(self) -> List[bytes]:
        """Everything queued right now, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(RECV_TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 104, "tmp_path too long for an AF_UNIX address; use a shorter --basetemp"
    r = Receiver(str(path))
    yield r
    r.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    r = Receiver(f"@edge-agent-test/{uuid.uuid4().hex}")
    yield r
    r.close()


def test_without_notify_socket_every_call_is_a_quiet_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert [notifier.ready(), notifier.reloading(), notifier.stopping(), notifier.status("x"),
            notifier.watchdog(), notifier.extend_timeout(5)] == [False] * 6
    notifier.close()


def test_lifecycle_datagrams_are_exact(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    assert notifier.enabled
    assert notifier.status("building engines")
    assert receiver.recv() == b"STATUS=building engines"
    assert notifier.extend_timeout(120)
    assert receiver.recv() == b"EXTEND_TIMEOUT_USEC=120000000"
    assert notifier.extend_timeout(0.25)
    assert receiver.recv() == b"EXTEND_TIMEOUT_USEC=250000"
    assert notifier.ready("running")
    assert receiver.recv() == b"READY=1\nSTATUS=running"
    assert notifier.stopping()
    assert receiver.recv() == b"STOPPING=1"
    notifier.close()


def test_reloading_carries_the_current_monotonic_time(receiver: Receiver) -> None:
    # systemd >= 253 discards RELOADING=1 without MONOTONIC_USEC from CLOCK_MONOTONIC.
    notifier = Notifier(receiver.address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receiver.recv().split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC" and before <= int(value) <= after
    assert notifier.ready("running (applied)")
    assert receiver.recv() == b"READY=1\nSTATUS=running (applied)"
    notifier.close()


def test_status_is_one_line(receiver: Receiver) -> None:
    notifier = Notifier(receiver.address)
    notifier.status("build det 2/5\nfp16 DLA0")
    assert receiver.recv() == b"STATUS=build det 2/5 fp16 DLA0"
    notifier.close()


def test_abstract_namespace_socket(abstract_receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": abstract_receiver.address})
    assert notifier.ready("running")
    assert abstract_receiver.recv() == b"READY=1\nSTATUS=running"
    notifier.close()


def test_datagrams_come_from_this_process_for_notify_access_main(receiver: Receiver) -> None:
    # NotifyAccess=main: PID 1 accepts a datagram only when the kernel says the main pid sent it.
    notifier = Notifier(receiver.address)
    notifier.ready()
    data, pid = receiver.recv_with_pid()
    assert data.startswith(b"READY=1") and pid == os.getpid()
    notifier.close()


def test_watchdog_pings_every_half_timeout(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = Notifier(receiver.address, watchdog_usec=30_000_000, clock=clock)
    assert notifier.watchdog_interval() == 15.0
    assert notifier.watchdog()
    assert receiver.recv() == b"WATCHDOG=1"
    # The main loop ticks several times a second; PID 1 hears from it once per interval.
    for _ in range(74):
        clock.now += 0.2
        assert not notifier.watchdog()
    assert receiver.pending() == []
    clock.now += 0.2
    assert notifier.watchdog()
    assert receiver.recv() == b"WATCHDOG=1"
    notifier.close()


def test_watchdog_pings_stop_while_the_main_loop_hangs(receiver: Receiver) -> None:
    """Only the loop pings: no timer thread keeps a hung agent alive."""
    clock = FakeClock()
    notifier = Notifier(receiver.address, watchdog_usec=2_000_000, clock=clock)
    for _ in range(5):
        notifier.watchdog()
        clock.now += 1.0
    assert receiver.pending() == [b"WATCHDOG=1"] * 5
    clock.now += 10.0  # the loop is stuck: nobody calls watchdog(), time passes
    assert receiver.pending() == []
    notifier.watchdog()  # the loop resumes
    assert receiver.pending() == [b"WATCHDOG=1"]
    notifier.close()


def test_watchdog_env_belongs_to_the_main_process_only(receiver: Receiver) -> None:
    base = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "4000000"}
    assert Notifier.from_env({**base, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 2.0
    assert Notifier.from_env(base).watchdog_interval() == 2.0
    child = Notifier.from_env({**base, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert child.watchdog_interval() is None and not child.watchdog()
    assert Notifier.from_env({**base, "WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert receiver.pending() == []


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.stopping()
    notifier.close()


def test_a_full_socket_never_blocks_or_raises(receiver: Receiver) -> None:
    # PID 1 stuck: its queue fills up; the agent must neither block nor crash.
    receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    notifier = Notifier(receiver.address)
    results = [notifier.status(f"step {i} " + "x" * 512) for i in range(5000)]
    assert results[0] and not all(results)
    assert receiver.recv().startswith(b"STATUS=step 0 ")
    notifier.close()


def test_close_then_send_reopens(receiver: Receiver) -> None:
    notifier = Notifier(receiver.address)
    notifier.stopping()
    notifier.close()
    notifier.close()
    assert notifier.status("again")
    assert receiver.pending() == [b"STOPPING=1", b"STATUS=again"]
    notifier.close()
