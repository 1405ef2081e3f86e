"""Hostile fleet updates against a running daemon (issue 10's adversarial suite, part 3).

The real ``Daemon`` (as in test_fleet_e2e.py) runs the demo classifier over a looping video. Signed,
schema-shaped but hostile updates arrive one after another, then a good one. Measured, and printed as
the figures docs/reliability.md quotes: attempts, clean errors (a terminal state with a reason),
tracebacks logged (0), crashed pipelines other than the bad one (0), wedged controllers (0), results
lost (0, by the spool's ``seq``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from tests.fleet.helpers import tampered
from tests.fleet.test_fleet_e2e import Device, assets, device  # noqa: F401 -- fixtures
from tests.mqtt.helpers import wait_until
from tests.support.fleet_daemon import PREFIX, manifest, model, pipeline

TERMINAL = ("applied", "rolled_back", "rejected")


def hostile(target: Device) -> List[Tuple[str, Callable[[int], bytes]]]:
    site, sign = target.site, target.signer.envelope

    def colors(extra: str = "", pre: str = "") -> str:
        block = model("colors", site.program).replace(
            "preprocess: {resize: [64, 64], color: rgb,", f"preprocess: {{resize: [64, 64], color: rgb,{pre}")
        return block + extra

    def one(text_of: Callable[[int], str]) -> Callable[[int], bytes]:
        return lambda v: sign(text_of(v), v)

    def good(v: int) -> str:
        return site.manifest(v, f"video-v{v}")

    return [
        ("tolerance NaN", one(lambda v: manifest(v, [colors("    validation: {inputs: assets/images, "
                                                              "tolerance: {fp32: .nan}}\n")],
                                                 [pipeline("bad", "colors")]))),
        ("input shape of 29 PiB", one(lambda v: manifest(v, [colors("    inputs: [{name: x, shape: "
                                                                     "[65536, 65536, 65536, 3]}]\n")],
                                                         [pipeline("bad", "colors")]))),
        ("mean Infinity", one(lambda v: manifest(v, [colors(pre=" mean: [.inf, 0, 0],")],
                                                 [pipeline("bad", "colors")]))),
        ("gopher source", one(lambda v: manifest(v, [colors()], [pipeline("bad", "colors", "gopher://x/y")]))),
        ("rtsp without host", one(lambda v: manifest(v, [colors()], [pipeline("bad", "colors", "rtsp:///x")]))),
        ("gray on a 3-channel model", one(lambda v: manifest(v, [colors().replace("color: rgb", "color: gray")],
                                                             [pipeline("bad", "colors")]))),
        ("no such input", one(lambda v: manifest(v, [colors(pre=" input: nosuch,")], [pipeline("bad", "colors")]))),
        ("model that cannot load", one(lambda v: manifest(v, [model("broken", "broken/inference.json")],
                                                          [pipeline("bad", "broken")]))),
        ("unreadable image in the grace period", one(lambda v: manifest(
            v, [colors()], [pipeline(f"video-v{v}", "colors"), pipeline("bad", "colors", "broken/frame.png")]))),
        ("path escape", one(lambda v: manifest(v, [model("colors", "../../outside/inference.json")],
                                               [pipeline("bad", "colors")]))),
        ("forged signature", lambda v: tampered(sign(good(v), v), manifest=good(v) + "# evil\n",
                                                sha256=hashlib.sha256((good(v) + "# evil\n").encode()).hexdigest())),
        ("not JSON", lambda v: b"{\"version\": " + str(v).encode() + b", \x00\xff"),
        ("replayed version", lambda v: sign(good(1), 1)),
    ]


def ended(target: Device, since: int, version: Optional[int]) -> List[Dict[str, Any]]:
    return [r for r in target.watch.reports(since) if r["version"] == version and r["status"] in TERMINAL]


def test_hostile_updates_never_wedge_the_controller_or_stop_the_running_pipeline(
        device: Device, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811 -- the imported fixture
    figures: Dict[str, int] = {"attempts": 0, "clean errors": 0, "tracebacks": 0,
                               "crashed pipelines other than the bad one": 0, "wedged controllers": 0,
                               "results lost": 0}
    version = 2
    for name, make in hostile(device):
        expected = {"replayed version": 1, "not JSON": None}.get(name, version)
        since = device.watch.mark()
        device.publish(make(version))
        figures["attempts"] += 1

        if not wait_until(lambda: bool(ended(device, since, expected)), 60):  # noqa: B023 -- called at once
            figures["wedged controllers"] += 1
            continue
        final = ended(device, since, expected)[-1]
        if final["status"] in ("rejected", "rolled_back") and final["reason"]:
            figures["clean errors"] += 1
        assert final["status"] != "applied", (name, final)
        assert final["applied"]["version"] == 1, (name, final)
        if not device.watch.keeps_flowing("video", more=3, timeout=30):
            figures["crashed pipelines other than the bad one"] += 1
        version += 1
    device.publish(device.signer.envelope(device.site.manifest(version, "video-good"), version))
    applied = device.watch.wait_for(version, "applied", timeout=60)
    assert applied["reason"] == "" and device.watch.keeps_flowing("video-good")
    figures["tracebacks"] = sum(1 for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING)
    seqs = sorted({json.loads(m.payload)["seq"] for m in device.watch.recorder.snapshot()
                   if m.topic.startswith(f"{PREFIX}/results/")})
    figures["results lost"] = len(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    print("hostile-updates figures:", figures)
    assert figures == {"attempts": len(hostile(device)), "clean errors": len(hostile(device)), "tracebacks": 0,
                       "crashed pipelines other than the bad one": 0, "wedged controllers": 0, "results lost": 0}

