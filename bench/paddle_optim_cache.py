"""Does caching Paddle's IR-optimized program speed up predictor creation on CPU?

For each model and format, builds a cache entry with ``PaddleBackend`` (which saves
``_optimized.*`` for legacy programs), then times in fresh child processes (a daemon start):
``create_predictor`` and the first inference, from the original program (IR passes run) and from
the entry (what ``load`` does). Prints one JSON line per case.

    .venv/bin/python -m bench.paddle_optim_cache [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

MIN, OPT, MAX = [1, 3, 64, 64], [1, 3, 224, 224], [1, 3, 224, 224]
INPUTS = [{"name": "x", "min": MIN, "opt": OPT, "max": MAX}]


def _export(kind: str, root: Path, legacy: bool) -> Path:
    """Export in a child so that FLAGS_enable_pir_api is read at import."""
    out = root / f"{kind}-{'legacy' if legacy else 'pir'}"
    env = dict(os.environ, FLAGS_enable_pir_api="0" if legacy else "1")
    code = (
        "import sys, paddle\n"
        "from pathlib import Path\n"
        "from tests.support.models import build_layer\n"
        "from paddle.vision.models import resnet18\n"
        "kind, out = sys.argv[1], sys.argv[2]\n"
        "paddle.seed(0)\n"
        "layer = resnet18() if kind == 'resnet18' else build_layer(kind)\n"
        "layer.eval()\n"
        "spec = [paddle.static.InputSpec([None, 3, None, None], 'float32', 'x')]\n"
        "paddle.jit.save(layer, out + '/inference', input_spec=spec)\n"
    )
    subprocess.run([sys.executable, "-c", code, kind, str(out)], env=env, check=True, capture_output=True)
    return out


def _measure_child(model: str, params: str, ir_optim: bool, memory_optim: bool, spec_json: str) -> None:
    """Runs in a child: one predictor creation + first and steady inference, printed as JSON."""
    import paddle.inference as pi

    from agent.backends.paddle.config import ShapeRange, configure
    from agent.backends.paddle.plan import PaddlePlan
    from agent.manifest.models import ModelSpec

    spec = ModelSpec.model_validate_json(spec_json).model_copy(update={"memory_optim": memory_optim})
    ranges = {"x": ShapeRange(MIN, OPT, MAX)}
    config = pi.Config(model, params)
    configure(config, spec, PaddlePlan("paddle-native", "cpu", "fp32"), ranges, None, ir_optim=ir_optim)
    started = time.perf_counter()
    predictor = pi.create_predictor(config)
    created = time.perf_counter() - started
    x = np.random.RandomState(0).rand(1, 3, 224, 224).astype("float32")
    handle = predictor.get_input_handle("x")

    def run() -> float:
        t = time.perf_counter()
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        predictor.run()
        predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        return time.perf_counter() - t

    first = run()
    steady = statistics.median(run() for _ in range(10))
    peak_mb = _peak_rss_mb()
    print(json.dumps({"create_s": created, "first_run_s": first, "ready_s": created + first,
                      "steady_ms": steady * 1000, "peak_rss_mb": peak_mb}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(model: Path, params: Path, ir_optim: bool, memory_optim: bool, spec_json: str) -> Dict[str, float]:
    cmd = [sys.executable, "-m", "bench.paddle_optim_cache", "--child", str(model), str(params),
           "1" if ir_optim else "0", "1" if memory_optim else "0", spec_json]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: Dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, params, ir, memory, spec_json = args.child
        _measure_child(model, params, ir == "1", memory == "1", spec_json)
        return

    from agent.backends.paddle.backend import BuildRecord, PaddleBackend
    from agent.manifest.models import ModelSpec
    from agent.progress import ProgressTimer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for kind in ("classifier", "resnet18"):
            for legacy in (True, False):
                folder = _export(kind, root, legacy)
                model = folder / ("inference.pdmodel" if legacy else "inference.json")
                params = folder / "inference.pdiparams"
                spec = ModelSpec.model_validate({"name": kind, "model": str(model), "params": str(params),
                                                 "target": "cpu", "inputs": INPUTS})
                entry = folder / "entry"
                entry.mkdir()
                started = time.perf_counter()
                PaddleBackend().build(spec, "fp32", entry, ProgressTimer(lambda _: None, kind))
                build_s = time.perf_counter() - started
                record = BuildRecord.read(entry)
                # (program, params, ir_optim, memory_optim) per variant; interleaved so load spikes hit all
                variants = {"original": (model, params, True, True),
                            "original-no-memory-optim": (model, params, True, False)}
                if record.program is not None and record.params is not None:
                    variants["optimized"] = (entry / record.program, entry / record.params, False, True)
                runs: Dict[str, List[Dict[str, float]]] = {v: [] for v in variants}
                for _ in range(args.repeat):
                    for name, (prog, weights, ir, memory) in variants.items():
                        runs[name].append(_child(prog, weights, ir, memory, spec.model_dump_json()))
                for name, results in runs.items():
                    summary: Dict[str, Any] = {"model": kind, "format": "legacy" if legacy else "pir",
                                               "program": name, "build_s": round(build_s, 3), "runs": len(results)}
                    for key in ("create_s", "first_run_s", "ready_s", "steady_ms", "peak_rss_mb"):
                        summary[key] = round(statistics.median(r[key] for r in results), 4)
                    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
