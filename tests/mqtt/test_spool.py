from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import PublishError
from agent.mqtt.spool import Spool

REPO = Path(__file__).resolve().parents[2]


def open_spool(path: Path, max_bytes: int = 1 << 20, max_messages: int = 1000) -> Spool:
    return Spool(path, max_bytes=max_bytes, max_messages=max_messages)


def test_sequence_order_ack_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    seqs = [spool.append(f"t/{i}", f"p{i}".encode(), qos=1) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [m.seq for m in spool.pending(10)] == seqs
    assert [m.seq for m in spool.pending(2, after=2)] == [3, 4]
    spool.ack(1)
    spool.ack_many([3, 99])
    assert spool.depth() == 3
    assert [m.payload for m in spool.pending(10)] == [b"p1", b"p3", b"p4"]
    spool.ack_many([2, 4, 5])
    spool.close()

    # an empty spool still continues the sequence after a restart: receivers dedupe by seq
    spool = open_spool(path)
    assert spool.depth() == 0
    assert spool.append("t", b"x", qos=0, retain=True) == 6
    (msg,) = spool.pending(10)
    assert (msg.topic, msg.qos, msg.retain) == ("t", 0, True)
    spool.close()


def test_payload_can_carry_its_own_seq(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    seq = spool.append("t", lambda n: f"seq={n}".encode(), qos=1)
    assert spool.pending(1)[0].payload == f"seq={seq}".encode()
    spool.close()


def test_failed_render_consumes_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")

    def broken(_: int) -> bytes:
        raise PublishError("bad result")

    with pytest.raises(PublishError):
        spool.append("t", broken, qos=1)
    assert spool.depth() == 0
    assert spool.append("t", b"ok", qos=1) == 1
    spool.close()


def test_message_cap_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_messages=10)
    for i in range(25):
        spool.append("t", str(i).encode(), qos=1)
    assert spool.depth() == 10
    assert spool.dropped == 15
    assert [m.seq for m in spool.pending(100)] == list(range(16, 26))
    spool.close()
    spool = open_spool(path, max_messages=10)
    assert spool.dropped == 15
    spool.close()


def test_byte_cap_drops_oldest(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_bytes=1000)
    for _ in range(10):
        spool.append("topic", b"x" * 195, qos=1)  # 200 bytes each with the topic
    assert spool.size_bytes() == 1000
    assert spool.depth() == 5
    assert spool.dropped == 5
    spool.append("topic", b"y" * 395, qos=1)  # needs two slots
    assert spool.depth() == 4
    assert spool.dropped == 7
    assert spool.pending(1)[0].seq == 8
    # a message larger than the whole cap cannot be kept: dropped and counted, the spool untouched
    spool.append("topic", b"z" * 2000, qos=1)
    assert spool.depth() == 4
    assert spool.dropped == 8
    spool.close()


def test_oldest_age(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    assert spool.oldest_age_s() == 0.0
    spool.append("t", b"x", qos=1)
    assert 0.0 <= spool.oldest_age_s() < 60.0
    spool.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    code = textwrap.dedent(f"""
        from pathlib import Path
        from agent.errors import PublishError
        from agent.mqtt.spool import Spool
        try:
            Spool(Path({str(tmp_path / "s.db")!r}), 1 << 20, 100)
        except PublishError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert "in use by another agent process" in out.stdout
    spool.close()


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PublishError, match="move it away"):
        open_spool(path)


def test_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    code = textwrap.dedent(f"""
        import threading
        from pathlib import Path
        from agent.mqtt.spool import Spool
        spool = Spool(Path({str(path)!r}), 1 << 20, 10000)
        for i in range(200):
            spool.append("t", str(i).encode(), qos=1)
        print("appended", flush=True)
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "appended"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    spool = open_spool(path)
    assert [m.payload for m in spool.pending(1000)] == [str(i).encode() for i in range(200)]
    assert spool.append("t", b"next", qos=1) == 201
    spool.close()


def test_append_many_is_one_transaction_all_or_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db", max_messages=4)
    stored = spool.append_many("t", [b"a", lambda seq: f"b{seq}".encode(), b"c"], qos=1)
    assert [(m.seq, m.payload) for m in stored] == [(1, b"a"), (2, b"b2"), (3, b"c")]
    assert [m.payload for m in spool.pending(10)] == [b"a", b"b2", b"c"]

    def bad(seq: int) -> bytes:
        raise PublishError("cannot encode")

    with pytest.raises(PublishError):
        spool.append_many("t", [b"d", bad], qos=1)
    # nothing of the failed batch was stored, and its sequence numbers are given out again
    assert spool.depth() == 3 and spool.last_seq == 3
    # the cap applies within a batch: the oldest make room, in order
    stored = spool.append_many("t", [b"e", b"f", b"g"], qos=1)
    assert [m.seq for m in stored] == [4, 5, 6]
    assert [m.payload for m in spool.pending(10)] == [b"c", b"e", b"f", b"g"]
    assert spool.depth() == 4 and spool.dropped == 2
    spool.close()
    spool = open_spool(tmp_path / "spool.db", max_messages=4)
    assert spool.depth() == 4 and spool.size_bytes() == 4 * 2 and spool.last_seq == 6
    spool.close()
