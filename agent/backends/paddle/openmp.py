"""Intel OpenMP's spin-wait, set per inference thread.

Paddle's CPU wheel runs its kernels on Intel OpenMP (``libiomp5``), whose worker threads keep
spinning for ``KMP_BLOCKTIME`` (200 ms) after each parallel region. Where inference is short next
to the rest of a frame (decode, pre- and post-processing), the workers spin through the gaps and
take a core from the capture thread: measured here, 1.2-1.7 ms of spinning per frame for a 64x64
classifier whose inference takes 0.5-0.9 ms. Where inference dominates, spinning saves the
wake-up at every region: ``KMP_BLOCKTIME=0`` cost ResNet-18 5-9% (docs/benchmarks.md). So the
choice is made per model from its measured warm-up, and applied with ``kmp_set_blocktime`` in the
model's own inference thread. Every inference thread sets it, in both directions, because the value
does not stay in one thread: Intel OpenMP hands an ended thread's settings to the next new thread
(measured: a fresh thread started after a blocktime-0 thread ended read 0), and a thread that never
set it (the main thread, in tests/backends/paddle/test_paddle_cpu.py) was seen to read another
thread's 0 too. An operator's ``KMP_BLOCKTIME`` in the environment always wins.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

# inference at most this long (warm, in ms) gets blocktime 0. Measured in the agent's pipeline: the 64x64
# classifier (0.3-0.9 ms) gains 9-25%; ResNet-18 at 10 ms (the AVX-512 benchmark host, 2026-12) keeps its
# fps and spends 7 of 30 ms of CPU per frame less; ResNet-18 at 26-36 ms (an older AVX2 host) lost 5-9%
SHORT_INFERENCE_MS = 15.0
DEFAULT_BLOCKTIME_MS = 200  # Intel OpenMP's own default


def blocktime_for(infer_ms: float) -> Optional[int]:
    """The blocktime (ms) to set for a model whose warm inference takes ``infer_ms``; None: leave it
    (the operator set ``KMP_BLOCKTIME``)."""
    if "KMP_BLOCKTIME" in os.environ:
        return None
    return 0 if infer_ms <= SHORT_INFERENCE_MS else DEFAULT_BLOCKTIME_MS


def set_thread_blocktime(ms: int) -> bool:
    """``kmp_set_blocktime(ms)`` for the calling thread; False where Intel OpenMP is not loaded (a GNU
    OpenMP build, e.g. Paddle on Jetson), which has no such setting."""
    try:
        lib = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD)
        setter = lib.kmp_set_blocktime
    except (OSError, AttributeError):
        return False
    setter.argtypes = [ctypes.c_int]
    setter.restype = None
    setter(ms)
    return True
