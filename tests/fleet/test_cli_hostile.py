"""The operator CLI on hostile paths and values (issue 10, defect 12): one line and a documented exit code,
never a traceback or a hang."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, List

import pytest

from agent.cli.main import main
from agent.errors import EX_DATAERR


def run(argv: List[str], seconds: float = 10.0) -> Any:
    out: List[Any] = []
    thread = threading.Thread(target=lambda: out.append(main(argv)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{argv} still running after {seconds} s (hung)"
    return out[0]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    assert main(["fleet", "keygen", "--out", str(tmp_path / "keys")]) == 0
    (tmp_path / "manifest.yaml").write_text("version: 2\nmodels: [{name: m, model: m.onnx, backend: tensorrt}]\n")
    (tmp_path / "m.onnx").write_bytes(b"onnx")  # sign validates the manifest: its files must exist
    return tmp_path / "keys"


@pytest.mark.parametrize("out", ["/nonexistent/dir/e.json", "/"])
def test_sign_to_an_unwritable_out_is_one_line(tmp_path: Path, keys: Path, out: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["fleet", "sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest",
                str(tmp_path / "manifest.yaml"), "--out", out])
    err = capsys.readouterr().err
    assert code == EX_DATAERR and err.startswith(f"edge-agent: --out {out}: cannot write the envelope"), err
    assert "Traceback" not in err and "internal error" not in err


def test_keygen_into_proc_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["fleet", "keygen", "--out", "/proc/x"]) == EX_DATAERR
    err = capsys.readouterr().err
    assert err.startswith("edge-agent: --out /proc/x: cannot write the key files"), err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("command", ["sign", "publish"])
def test_a_fifo_or_dev_zero_as_input_is_refused_not_read(tmp_path: Path, keys: Path, kind: str, command: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    argv = (["fleet", "sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(path), "--out", "-"]
            if command == "sign" else ["fleet", "publish", "--envelope", str(path), "--device", "d1", "--port", "1"])
    assert run(argv) == EX_DATAERR
    err = capsys.readouterr().err
    assert "cannot read" in err and ("not a regular file" in err or "symbolic link" in err), err


@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_a_non_positive_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fleet", "publish", "--envelope", str(tmp_path / "e.json"), "--device", "d1", "--timeout", value])
    assert exc.value.code == 2
