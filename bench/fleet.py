"""``fleet rollout`` and ``fleet status`` at scale: the fleet SIMULATOR's devices plus real agents,
one local Mosquitto. Every party is its own process: the broker, the simulator
(``python -m agent.fleet.simulator``), each real agent (``python -m agent run``: the demo's Paddle
classifier on CPU at 5 fps) and each command (``python -m agent fleet ...``), whose CPU time and
peak memory come from ``os.wait4``.

    python -m bench.fleet --simulated 1000 --real 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.demo.broker import Broker, free_port
from agent.fleet.envelope import build_envelope
from agent.fleet.keys import public_b64
from agent.fleet.publish import BrokerTarget, OperatorClient
from agent.fleet.view import FleetView

ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench"


def manifest(version: int, program: str) -> str:
    return (f"version: {version}\nmodels:\n  - name: colors\n    model: {program}\n"
            "    params: assets/model/inference.pdiparams\n    target: cpu\n"
            "    preprocess: {resize: [64, 64], color: rgb, scale: 0.00392156862745098}\n"
            "    postprocess: {type: classification, labels_file: assets/labels.txt, top_k: 1}\n"
            f"pipelines:\n  - name: video-v{version}\n    source: assets/video.avi\n    model: colors\n"
            "    options: {loop: true, fps: 5}\n    publish: {qos: 0}\n")


def program_name(model_dir: Path) -> str:
    """The exported Paddle program: inference.json (Paddle 3) or inference.pdmodel."""
    return "inference.json" if (model_dir / "inference.json").exists() else "inference.pdmodel"


def real_agent(root: Path, assets: Path, name: str, port: int, key: str) -> subprocess.Popen[bytes]:
    models = root / "models"
    shutil.copytree(assets, models / "assets")
    program = f"assets/model/{program_name(models / 'assets' / 'model')}"
    (models / "manifest.yaml").write_text(manifest(1, program))
    (root / "config.yaml").write_text(json.dumps({
        "device_id": name, "manifest": "models/manifest.yaml", "cache_dir": "cache", "state_dir": "state",
        "groups": [GROUP], "health_interval": 5.0, "mqtt": {"port": port},
        "fleet": {"public_keys": [key], "grace_period_s": 2.0}}))
    log = open(root / "agent.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(root / "config.yaml")],
                            cwd=str(ROOT), stdout=log, stderr=log)


def measured(cmd: List[str]) -> Dict[str, Any]:
    """Run ``cmd``: its exit status, wall time, CPU seconds and peak RSS (``os.wait4``), and stdout."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    streams: Dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        streams[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, f)) for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    for reader in readers:
        reader.join()
    return {"exit": proc.returncode, "wall_s": round(wall, 2), "stdout": streams["out"].decode(),
            "stderr": streams["err"].decode(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def wait_members(port: int, count: int, timeout: float) -> float:
    view = FleetView("edge")
    start = time.monotonic()
    with OperatorClient(BrokerTarget(port=port), view.handle) as client:
        client.subscribe(view.filters())
        while len(view.members(GROUP)) < count and time.monotonic() - start < timeout:
            time.sleep(0.2)
        return len(view.members(GROUP))


def run(simulated: int, real: int, work: Path, soak_s: float, waves: str, log: Any) -> Dict[str, Any]:
    port = free_port()
    broker = Broker(work / "broker", port).start()
    # In a child: training the demo model imports Paddle, and a fork of a big parent inflates the
    # children's peak-RSS figures (Linux counts the parent's pages until exec).
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from agent.demo.assets import "
                    "ensure_assets; ensure_assets(Path(sys.argv[1]))", str(work / "assets")], cwd=str(ROOT), check=True)
    key = Ed25519PrivateKey.generate()
    agents = [real_agent(work / f"real-{i}", work / "assets", f"real-{i}", port,
                         public_b64(key.public_key())) for i in range(real)]
    sim = subprocess.Popen([sys.executable, "-m", "agent.fleet.simulator", "--port", str(port), "--devices",
                            str(simulated), "--group", GROUP, "--delay", "0.5", "2.0", "--results-interval", "2"],
                           cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found = wait_members(port, simulated + real, 180)
        log(f"{found} members of {simulated + real} visible")
        program = program_name(work / "assets" / "model")
        env = work / "v2.json"
        env.write_bytes(build_envelope(manifest(2, f"assets/model/{program}").encode(), 2, key,
                                       target=f"group:{GROUP}").to_json())
        status = measured([sys.executable, "-m", "agent", "fleet", "status", "--group", GROUP, "--port", str(port),
                           "--json", "--wait", "3"])
        rows = [json.loads(line) for line in status["stdout"].splitlines() if line.strip()]
        rollout = measured([sys.executable, "-m", "agent", "fleet", "rollout", "--envelope", str(env), "--group",
                            GROUP, "--port", str(port), "--canary", "1", "--waves", waves, "--soak-s", str(soak_s),
                            "--timeout-s", "300", "--journal", str(work / "journal.json"), "--json"])
        if not rollout["stdout"].strip():
            raise RuntimeError(f"fleet rollout printed nothing; stderr: {rollout['stderr'][-2000:]}")
        doc = json.loads(rollout["stdout"])
        outcomes: Dict[str, int] = {}
        for d in doc["devices"]:
            outcomes[d["outcome"]] = outcomes.get(d["outcome"], 0) + 1
        return {
            "members": found, "simulated": simulated, "real": real,
            "status": {"wall_s": status["wall_s"], "rows": len(rows), "online": sum(1 for r in rows if r["online"]),
                       "cpu_s": status["cpu_s"], "max_rss_mb": status["max_rss_mb"]},
            "rollout": {"exit": rollout["exit"], "wall_s": rollout["wall_s"], "waves": doc["waves"],
                        "messages": doc["messages"], "outcomes": outcomes, "cpu_s": rollout["cpu_s"],
                        "max_rss_mb": rollout["max_rss_mb"],
                        "real_agents": {d["device"]: d["outcome"] for d in doc["devices"]
                                        if d["device"].startswith("real-")}},
            "soak_s": soak_s,
        }
    finally:
        sim.terminate()
        for proc in agents:
            proc.terminate()
        for proc in [sim, *agents]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--simulated", type=int, default=1000)
    p.add_argument("--real", type=int, default=3)
    p.add_argument("--soak-s", type=float, default=5.0)
    p.add_argument("--waves", default="10,50,100")
    p.add_argument("--work", type=Path, default=None, help="keep the run's files here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        doc = run(args.simulated, args.real, work, args.soak_s, args.waves,
                  lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(doc, indent=1))
    return 0 if doc["rollout"]["exit"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(main())
