"""A separate agent process for tests that kill -9 it: ``python -m tests.mqtt.agent_proc <mode> ...``.

Modes:
  status  connect, print "connected", then wait to be killed (tests the last will)
  spool   start with the broker down, spool --count results, print "spooled <first> <last>", wait to be killed
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from agent.mqtt.link import MqttLink
from agent.mqtt.payloads import result_payload
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.spool import Spool
from agent.mqtt.topics import Topics
from tests.mqtt.helpers import fast_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("status", "spool"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="dev1")
    parser.add_argument("--spool")
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    topics = Topics("edge", args.device)
    link = MqttLink(fast_config(args.port), topics)
    link.start()
    if args.mode == "status":
        if not link.wait_connected(10):
            sys.exit("not connected")
        print("connected", flush=True)
    else:
        spool = Spool(Path(args.spool), 1 << 20, 10_000)
        publisher = ResultPublisher(spool, link)
        publisher.start()
        latency = {"pre": 1.0, "infer": 2.0, "post": 0.5}
        seqs = [publisher.publish(topics.results("cam"), result_payload(args.device, "cam", "m", "file.mp4", i,
                                                                        time.time(), latency, {"i": i}))
                for i in range(args.count)]
        print(f"spooled {seqs[0]} {seqs[-1]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
