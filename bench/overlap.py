"""Threads or processes for the pipeline's stage overlap? Four measurements on the real model and video.

1. GIL probe: a pure-Python counter runs in the main thread, alone and then while another thread
   loops ``predictor.run()`` (1 Paddle thread). If ``run()`` held the GIL the counter would nearly
   stop; if it releases it the counter keeps most of its rate (both fit on the 2 cores).
2. Scaling: the same number of inferences by one predictor (1 Paddle thread), by two threads (the
   predictor and its ``clone()``), and by two processes (one predictor each); and by one predictor
   with 2 Paddle threads (the agent's setting).
3. Hand-off: the cost of passing one decoded 640x480 frame between two threads (``queue.Queue``)
   versus two processes (``multiprocessing.Queue``, which pickles it through a pipe).
4. Decode + inference: the video decoded in one thread while the predictor runs in another, against
   the two run one after the other (what the pipeline's capture and inference threads overlap).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from bench.limit import input_tensor
from bench.seed import create_predictor, run

COUNT_S = 1.0
WARM_RUNS = 3
HANDOFF_FRAMES = 200


def _count_for(seconds: float) -> float:
    """Pure-Python increments per second: needs the GIL all the time."""
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n / seconds


def gil_probe(predictor: Any, x: np.ndarray) -> Dict[str, float]:
    alone = _count_for(COUNT_S)
    stop = threading.Event()
    warm = threading.Event()
    runs = [0]

    def infer() -> None:
        _warm_up(predictor, x)
        warm.set()
        while not stop.is_set():
            run(predictor, [x])
            runs[0] += 1

    worker = threading.Thread(target=infer)
    worker.start()
    warm.wait()
    during = _count_for(COUNT_S)
    stop.set()
    worker.join()
    return {"counter_alone_per_s": round(alone), "counter_during_run_per_s": round(during),
            "counter_ratio": round(during / alone, 3), "runs_meanwhile": runs[0]}


def _warm_up(predictor: Any, x: np.ndarray) -> None:
    """Paddle's oneDNN caches primitives per thread: the first runs in a new thread are slow."""
    for _ in range(WARM_RUNS):
        run(predictor, [x])


def _timed_runs(predictor: Any, x: np.ndarray, n: int, barrier: Any, spans: List[Tuple[float, float]]) -> None:
    _warm_up(predictor, x)
    barrier.wait()
    t0 = time.monotonic()
    for _ in range(n):
        run(predictor, [x])
    spans.append((t0, time.monotonic()))


def _process_worker(model: str, params: str, size: Tuple[int, int], n: int, barrier: Any, out: Any) -> None:
    predictor = create_predictor(Path(model), Path(params), 1)
    x = input_tensor(size)
    spans: List[Tuple[float, float]] = []
    _timed_runs(predictor, x, n, barrier, spans)
    out.put(spans[0])


def _fps(n: int, spans: List[Tuple[float, float]]) -> float:
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return round(n / wall, 2)


def scaling(params: Mapping[str, Any], n: int) -> Dict[str, float]:
    model, weights, size = params["model"], params["params"], tuple(params["size"])
    x = input_tensor(size)
    one = create_predictor(Path(model), Path(weights), 1)
    two = one.clone()
    out: Dict[str, float] = {}
    spans: List[Tuple[float, float]] = []
    _timed_runs(one, x, n, threading.Barrier(1), spans)
    out["one_thread_fps"] = _fps(n, spans)

    spans = []
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=_timed_runs, args=(p, x, n // 2, barrier, spans)) for p in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["two_threads_fps"] = _fps(2 * (n // 2), spans)

    ctx = mp.get_context("spawn")
    pbarrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(model, weights, size, n // 2, pbarrier, results))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    pspans = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    out["two_processes_fps"] = _fps(2 * (n // 2), pspans)

    both = create_predictor(Path(model), Path(weights), 2)
    spans = []
    _timed_runs(both, x, n, threading.Barrier(1), spans)
    out["one_predictor_two_paddle_threads_fps"] = _fps(n, spans)
    return out


def _drain(q: Any, n: int) -> None:
    for _ in range(n):
        q.get()


def _drain_when_ready(q: Any, n: int, ready: Any) -> None:
    ready.set()
    _drain(q, n)


def handoff(frame: np.ndarray) -> Dict[str, float]:
    """Microseconds per frame through a thread queue and through a process queue (receiver in a child)."""
    out: Dict[str, float] = {}
    tq: queue.Queue[np.ndarray] = queue.Queue(maxsize=4)
    receiver = threading.Thread(target=_drain, args=(tq, HANDOFF_FRAMES))
    receiver.start()
    t0 = time.perf_counter()
    for _ in range(HANDOFF_FRAMES):
        tq.put(frame)
    receiver.join()
    out["thread_queue_us_per_frame"] = round((time.perf_counter() - t0) * 1e6 / HANDOFF_FRAMES, 1)

    ctx = mp.get_context("spawn")
    pq = ctx.Queue(maxsize=4)
    ready = ctx.Event()
    child = ctx.Process(target=_drain_when_ready, args=(pq, HANDOFF_FRAMES, ready))
    child.start()
    ready.wait(120)
    t0 = time.perf_counter()
    for _ in range(HANDOFF_FRAMES):
        pq.put(frame)
    child.join()
    out["process_queue_us_per_frame"] = round((time.perf_counter() - t0) * 1e6 / HANDOFF_FRAMES, 1)
    return out


def _decode_all(video: str, limit: int) -> int:
    import cv2

    cap = cv2.VideoCapture(video)
    n = 0
    while n < limit:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def decode_overlap(predictor: Any, x: np.ndarray, video: str, frames: int, runs: int) -> Dict[str, float]:
    t0 = time.perf_counter()
    decoded = _decode_all(video, frames)
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(runs):
        run(predictor, [x])
    infer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoder = threading.Thread(target=_decode_all, args=(video, frames))
    decoder.start()
    for _ in range(runs):
        run(predictor, [x])
    decoder.join()
    both_s = time.perf_counter() - t0
    return {"frames_decoded": decoded, "inferences": runs, "decode_s": round(decode_s, 3),
            "infer_s": round(infer_s, 3), "sequential_s": round(decode_s + infer_s, 3),
            "overlapped_s": round(both_s, 3), "speedup": round((decode_s + infer_s) / both_s, 3)}


def run_probe(params: Mapping[str, Any]) -> Dict[str, Any]:
    import cv2

    size = (int(params["size"][0]), int(params["size"][1]))
    x = input_tensor(size)
    single = create_predictor(Path(params["model"]), Path(params["params"]), 1)
    _warm_up(single, x)
    cap = cv2.VideoCapture(str(params["video"]))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot read a frame from {params['video']}")
    iterations = int(params["iterations"])
    return {
        "gil": gil_probe(single, x),
        "scaling": scaling(params, iterations),
        "handoff": handoff(frame),
        "decode_overlap": decode_overlap(single, x, str(params["video"]), int(params["frames"]), iterations),
    }
