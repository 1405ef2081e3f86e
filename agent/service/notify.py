"""systemd's sd_notify protocol: datagrams to ``$NOTIFY_SOCKET`` (see sd_notify(3)).

JetPack 5/6 ship systemd 245/249, which lack ``Type=notify-reload``: reloads are
announced by hand as ``RELOADING=1`` + ``MONOTONIC_USEC`` followed by ``READY=1``.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

The daemon calls ``watchdog()`` on every turn of its main loop; the notifier turns that into
one ``WATCHDOG=1`` per half timeout, so PID 1 is not woken several times a second.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, Mapping, Optional


class Notifier:
    def __init__(self, address: Optional[str], watchdog_usec: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._address = _socket_address(address) if address else None
        self._sock: Optional[socket.socket] = None
        # The main loop and the manifest-swap thread both notify; only one socket may be made.
        self._sock_lock = threading.Lock()
        self._clock = clock
        self._last_ping: Optional[float] = None
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Notifier:
        env = os.environ if env is None else env
        watchdog = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process systemd expects pings from; a child must not ping.
        if watchdog and pid and pid.isdigit() and int(pid) != os.getpid():
            watchdog = None
        return cls(env.get("NOTIFY_SOCKET"), int(watchdog) if watchdog and watchdog.isdigit() else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> Optional[float]:
        """Seconds between pings: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines; returns False when not under systemd or the send failed."""
        if self._address is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with self._sock_lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                sock = self._sock
            sock.sendto(payload, self._address)
            return True
        except OSError:
            # A full or vanished socket must never take the agent down; systemd's timeouts catch real hangs.
            return False

    def ready(self, status: str = "running") -> bool:
        return self.send(ready=1, status=status)

    def reloading(self) -> bool:
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def status(self, text: str) -> bool:
        return self.send(status=text.replace("\n", " "))

    def watchdog(self) -> bool:
        """Ping when half the watchdog timeout has passed since the last ping; True if one was sent.

        Without ``WATCHDOG_USEC`` (no ``WatchdogSec=``, or another process is the watched one)
        nothing is sent.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < interval:
            return False
        sent = self.send(watchdog=1)
        if sent:
            self._last_ping = now
        return sent

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(extend_timeout_usec=int(seconds * 1e6))

    def close(self) -> None:
        with self._sock_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _socket_address(address: str) -> str:
    # An '@' prefix names a socket in the abstract namespace (leading NUL byte).
    return "\0" + address[1:] if address.startswith("@") else address
