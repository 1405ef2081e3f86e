"""FpsGate, EventWindow, Backoff and connection quality, with injected time and randomness."""

from __future__ import annotations

import pytest

from agent.backoff import Backoff
from agent.sources.health import connection_quality
from agent.sources.rate import EventWindow, FpsGate


def _admitted(gate: FpsGate, times) -> list:
    return [t for t in times if gate.admit(t)]


@pytest.mark.parametrize(("source_fps", "target", "expected"), [(30, 10, 10), (30, 15, 15), (30, 20, 20),
                                                                  (30, 30, 30), (30, 60, 30), (25, 5, 5)])
def test_gate_yields_target_rate_from_regular_timestamps(source_fps, target, expected) -> None:
    times = [i / source_fps for i in range(10 * source_fps)]  # ten seconds of capture
    assert abs(len(_admitted(FpsGate(target), times)) - 10 * expected) <= 1


def test_gate_without_target_admits_everything() -> None:
    assert len(_admitted(FpsGate(None), [0.0, 0.0, 0.001])) == 3


def test_gate_tolerates_capture_jitter() -> None:
    # 30 fps with +-4 ms jitter gated to 15 fps still gives every second frame.
    jitter = [0.004, -0.004, 0.003, -0.002, 0.0, 0.004, -0.004, 0.001] * 4
    times = [i / 30 + jitter[i] for i in range(30)]
    assert len(_admitted(FpsGate(15), times)) == 15


def test_gate_restarts_grid_after_a_gap() -> None:
    gate = FpsGate(10)
    assert _admitted(gate, [0.0, 0.1, 5.0, 5.05, 5.1, 5.2]) == [0.0, 0.1, 5.0, 5.1, 5.2]


def test_gate_admitted_frames_are_never_closer_than_half_a_period() -> None:
    times = [i * 0.013 for i in range(500)]
    kept = _admitted(FpsGate(12), times)
    assert min(b - a for a, b in zip(kept, kept[1:])) >= 0.5 / 12


def test_gate_does_not_pass_on_a_burst_of_late_frames() -> None:
    # 5 fps target: the frame due at 0.4 arrives 0.19 s late and buffered ones follow within
    # milliseconds, already past the next grid point's tolerance.
    times = [0.0, 0.2, 0.59, 0.591, 0.592, 0.62, 0.7, 0.81]
    kept = _admitted(FpsGate(5), times)
    assert kept == [0.0, 0.2, 0.59, 0.7, 0.81]


def test_event_window_slides() -> None:
    window = EventWindow(3600.0)
    for t in (0.0, 10.0, 1800.0):
        window.add(t)
    assert window.count(3599.0) == 3
    assert window.count(3600.0) == 2
    assert window.count(3610.5) == 1
    assert window.count(9999.0) == 0


def test_event_window_prunes_on_add() -> None:
    window = EventWindow(5.0)
    for i in range(10_000):
        window.add(i * 0.01)
    assert len(window._times) <= 501


def test_backoff_grows_exponentially_within_bounds() -> None:
    top = Backoff(1.0, 8.0, rand=lambda: 1.0)
    assert [top.next_delay() for _ in range(6)] == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    bottom = Backoff(1.0, 8.0, rand=lambda: 0.0)
    assert [bottom.next_delay() for _ in range(4)] == [1.0, 1.0, 1.0, 1.0]
    half = Backoff(1.0, 8.0, rand=lambda: 0.5)
    assert [half.next_delay() for _ in range(4)] == [1.5, 2.5, 4.5, 4.5]


def test_backoff_reset_and_degenerate_bounds() -> None:
    backoff = Backoff(2.0, 60.0, rand=lambda: 1.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 4.0
    assert Backoff(5.0, 5.0, rand=lambda: 1.0).next_delay() == 5.0
    many = Backoff(0.5, 30.0, rand=lambda: 1.0)
    assert max(many.next_delay() for _ in range(2000)) == 30.0  # no float overflow after many attempts


@pytest.mark.parametrize(
    ("fps", "expected_fps", "reconnects", "stalls", "quality"),
    [
        (0.0, 10.0, 0, 0, "unusable"),
        (0.05, None, 0, 0, "unusable"),
        (10.0, 10.0, 0, 0, "excellent"),
        (9.0, 10.0, 0, 4, "excellent"),
        (9.0, 10.0, 0, 5, "fair"),
        (8.0, 10.0, 0, 0, "fair"),
        (6.0, 10.0, 2, 0, "fair"),
        (5.0, 10.0, 2, 0, "poor"),
        (5.0, 10.0, 3, 0, "poor"),
        (5.0, 10.0, 11, 0, "unusable"),
        (0.5, 10.0, 3, 0, "unusable"),
        (5.0, 10.0, 3, 101, "unusable"),
        (3.0, None, 0, 0, "excellent"),
        (3.0, None, 2, 0, "fair"),
        (3.0, None, 5, 0, "poor"),
    ],
)
def test_connection_quality_follows_frigate(fps, expected_fps, reconnects, stalls, quality) -> None:
    assert connection_quality(fps, expected_fps, reconnects, stalls) == quality


def test_full_jitter_backoff_starts_at_zero_under_the_same_ceiling() -> None:
    low = Backoff(1.0, 8.0, rand=lambda: 0.0, full_jitter=True)
    high = Backoff(1.0, 8.0, rand=lambda: 1.0, full_jitter=True)
    assert [low.next_delay() for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert [high.next_delay() for _ in range(4)] == [2.0, 4.0, 8.0, 8.0]
