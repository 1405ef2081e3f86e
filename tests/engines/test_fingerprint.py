from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.engines.cache import _KEY
from agent.engines.device import DeviceIdentity
from agent.engines.fingerprint import (
    KEY_SCHEMA,
    Fingerprint,
    compute_fingerprint,
    hash_files,
    hash_model_files,
    sha256_file,
)
from agent.manifest.models import CpuOptions, ModelSpec, PreprocessSpec, TensorRTOptions, ValidationSpec

ORIN = DeviceIdentity(kind="jetson", arch="aarch64", model="NVIDIA Jetson Orin Nano Developer Kit", l4t="R36.3.0",
                      soc="tegra234", compute_capability="8.7", cuda="12.2", cpu_model="arm-0x41-0xd42",
                      cpu_flags=("asimd", "asimddp"))
PADDLE = {"paddle": "3.0.0", "paddle_commit": "abc123", "tensorrt_compile": "8.6.2", "tensorrt_runtime": "8.6.2",
          "cuda": "12.2", "cudnn": "8.9"}
FILES = {"0.json": "a" * 64, "1.pdiparams": "b" * 64}
CALIB = "c" * 64


def base_spec(**update: Any) -> ModelSpec:
    doc: Dict[str, Any] = {
        "name": "det",
        "model": "/models/det/inference.json",
        "params": "/models/det/inference.pdiparams",
        "backend": "paddle",
        "target": "dla:0",
        "precision": "int8",
        "inputs": [{"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640], "max": [4, 3, 640, 640]},
                   {"name": "scale_factor", "shape": [1, 2]}],
        "calibration": {"images": "calib/*.jpg", "count": 100, "batch_size": 4},
    }
    doc.update(update)
    return ModelSpec.model_validate(doc)


Args = Tuple[ModelSpec, str, Dict[str, str], DeviceIdentity, Dict[str, str], Optional[str]]


def base_args() -> Args:
    return base_spec(), "int8", dict(PADDLE), ORIN, dict(FILES), CALIB


def fingerprint(args: Args) -> Fingerprint:
    return compute_fingerprint(*args)


def with_spec(**update: Any) -> Callable[[Args], Args]:
    def change(args: Args) -> Args:
        doc = args[0].model_dump()
        for path, value in update.items():
            target = doc
            *parents, leaf = path.split("__")
            for p in parents:
                target = target[p]
            target[leaf] = value
        return (ModelSpec.model_validate(doc), *args[1:])
    return change


def with_device(**update: Any) -> Callable[[Args], Args]:
    def change(args: Args) -> Args:
        spec, precision, identity, device, files, calib = args
        return spec, precision, identity, DeviceIdentity(**{**device.__dict__, **update}), files, calib
    return change


def with_identity(name: str, value: str) -> Callable[[Args], Args]:
    def change(args: Args) -> Args:
        spec, precision, identity, device, files, calib = args
        return spec, precision, {**identity, name: value}, device, files, calib
    return change


def with_file(role: str, value: str) -> Callable[[Args], Args]:
    def change(args: Args) -> Args:
        spec, precision, identity, device, files, calib = args
        return spec, precision, identity, device, {**files, role: value}, calib
    return change


def with_calibration_hash(value: str) -> Callable[[Args], Args]:
    return lambda args: (*args[:5], value)


def with_precision(value: str) -> Callable[[Args], Args]:
    return lambda args: (args[0], value, *args[2:])


# Every input that invalidates a built engine, and a change to it.
TRT_CHANGES: Dict[str, Any] = {
    "workspace_size": 1 << 28, "max_batch_size": 8, "min_subgraph_size": 5, "use_static": False,
    "use_calib_mode": False, "disabled_ops": ["nms"], "optimization_level": 5, "dla_gpu_fallback": False,
    "timing_cache": False,
}
CPU_CHANGES: Dict[str, Any] = {"threads": 4, "mkldnn": False}
PRE_CHANGES: Dict[str, Any] = {
    "resize": (640, 640), "keep_aspect": True, "pad_value": 0, "color": "bgr", "scale": 1.0, "mean": [0.5, 0.5, 0.5],
    "std": [0.2, 0.2, 0.2], "layout": "nhwc", "dtype": "float16", "input": "image",
    "extra_inputs": {"scale_factor": "scale_factor"}, "resize_rule": "limit_side", "limit_side_len": 640,
    "limit_type": "min", "size_multiple": 16, "line_min_width": 160, "line_max_width": 640,
}
DEVICE_CHANGES: Dict[str, Any] = {
    "kind": "gpu", "arch": "x86_64", "model": "NVIDIA Jetson Orin NX", "l4t": "R36.4.0", "soc": "tegra264",
    "compute_capability": "8.6", "cuda": "12.6", "cpu_model": "arm-0x41-0xd4f", "cpu_flags": ("asimd", "sve"),
}
CHANGES: List[Tuple[str, Callable[[Args], Args]]] = [
    ("name", with_spec(name="det2")),
    ("target", with_spec(target="dla:1")),
    ("target-gpu", with_spec(target="gpu")),
    ("memory_optim", with_spec(memory_optim=False)),
    ("input-min", with_spec(inputs=[{"name": "image", "min": [1, 3, 256, 256], "opt": [1, 3, 640, 640],
                                     "max": [4, 3, 640, 640]}, {"name": "scale_factor", "shape": [1, 2]}])),
    ("input-opt", with_spec(inputs=[{"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 480, 480],
                                     "max": [4, 3, 640, 640]}, {"name": "scale_factor", "shape": [1, 2]}])),
    ("input-max", with_spec(inputs=[{"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640],
                                     "max": [8, 3, 640, 640]}, {"name": "scale_factor", "shape": [1, 2]}])),
    ("input-fixed", with_spec(inputs=[{"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640],
                                       "max": [4, 3, 640, 640]}, {"name": "scale_factor", "shape": [2, 2]}])),
    ("input-name", with_spec(inputs=[{"name": "x", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640],
                                      "max": [4, 3, 640, 640]}, {"name": "scale_factor", "shape": [1, 2]}])),
    ("input-dtype", with_spec(inputs=[{"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640],
                                       "max": [4, 3, 640, 640], "dtype": "float16"},
                                      {"name": "scale_factor", "shape": [1, 2]}])),
    ("input-order", with_spec(inputs=[{"name": "scale_factor", "shape": [1, 2]},
                                      {"name": "image", "min": [1, 3, 320, 320], "opt": [1, 3, 640, 640],
                                       "max": [4, 3, 640, 640]}])),
    ("calibration-count", with_spec(calibration__count=50)),
    ("calibration-batch", with_spec(calibration__batch_size=8)),
    ("calibration-hash", with_calibration_hash("d" * 64)),
    ("precision", with_precision("fp16")),
    ("model-bytes", with_file("0.json", "e" * 64)),
    ("params-bytes", with_file("1.pdiparams", "f" * 64)),
    ("extra-file", with_file("2.so", "9" * 64)),
    *[(f"tensorrt-{k}", with_spec(**{f"tensorrt__{k}": v})) for k, v in TRT_CHANGES.items()],
    *[(f"cpu-{k}", with_spec(**{f"cpu__{k}": v})) for k, v in CPU_CHANGES.items()],
    *[(f"preprocess-{k}", with_spec(**{f"preprocess__{k}": v})) for k, v in PRE_CHANGES.items()],
    *[(f"device-{k}", with_device(**{k: v})) for k, v in DEVICE_CHANGES.items()],
    *[(f"backend-{k}", with_identity(k, "other")) for k in PADDLE],
    ("backend-new-entry", with_identity("plugins_sha256", "0" * 64)),
]


@pytest.mark.parametrize("label,change", CHANGES, ids=[label for label, _ in CHANGES])
def test_every_field_changes_the_key(label: str, change: Callable[[Args], Args]) -> None:
    before = fingerprint(base_args())
    after = fingerprint(change(base_args()))
    assert after.key != before.key, label
    assert after.fields != before.fields


def test_backend_kind_changes_the_key() -> None:
    spec = ModelSpec(name="m", model="/m/model.onnx", backend="tensorrt")
    paddle_like = ModelSpec(name="m", model="/m/model.json", params="/m/model.pdiparams", backend="paddle")
    a = compute_fingerprint(spec, "fp32", {}, ORIN, {"0.onnx": "a" * 64}, None)
    b = compute_fingerprint(paddle_like, "fp32", {}, ORIN, {"0.onnx": "a" * 64}, None)
    assert a.key != b.key


def test_every_option_is_covered_by_a_change() -> None:
    # A new manifest option must be added to the key (and to CHANGES) or explicitly exempted here.
    assert set(TRT_CHANGES) == set(TensorRTOptions.model_fields)
    assert set(CPU_CHANGES) == set(CpuOptions.model_fields)
    assert set(PRE_CHANGES) == set(PreprocessSpec.model_fields)
    assert set(DEVICE_CHANGES) == set(DeviceIdentity.__dataclass_fields__)
    in_key = {"name", "backend", "target", "inputs", "tensorrt", "cpu", "memory_optim", "calibration", "preprocess",
              "model", "params",  # model/params: by content, through file_hashes
              "validation"}  # an entry is committed only after passing the gate in force
    # These never change what is built: which precision is tried is the ``precision`` argument, the
    # rest is checked before the build (sha256), applied to outputs (postprocess; its ``output``
    # name is keyed through validation when a gate compares it) or decides how frames are grouped at
    # run time (batching; the engine's max batch is keyed through tensorrt.max_batch_size and inputs).
    exempt = {"precision", "precision_fallback", "require_target", "sha256", "postprocess", "batching"}
    assert set(ModelSpec.model_fields) == in_key | exempt


def test_fields_are_self_describing() -> None:
    fp = fingerprint(base_args())
    assert fp.fields["key_schema"] == KEY_SCHEMA
    assert fp.fields["dla_cores"] == [0]
    assert fp.fields["calib_mode"] is True
    assert fp.fields["calibration"] == {"sha256": CALIB, "count": 100, "batch_size": 4}
    assert fp.fields["inputs"][1] == {"name": "scale_factor", "dtype": "float32", "min": [1, 2], "opt": [1, 2],
                                      "max": [1, 2]}
    assert fp.fields["device"]["l4t"] == "R36.3.0"
    assert fp.key == f"det-int8-dla_0-orin-nano-r36.3-{fp.digest[:16]}"
    assert len(fp.digest) == 64


def test_key_is_a_safe_cache_key() -> None:
    fp = fingerprint(base_args())
    assert _KEY.match(fp.key)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", fp.key)
    spec = base_spec(target="dla:all")
    assert "-dla_all-" in compute_fingerprint(spec, "int8", PADDLE, ORIN, FILES, CALIB).key


def test_key_is_deterministic_and_order_independent() -> None:
    a = fingerprint(base_args())
    reordered = dict(reversed(list(PADDLE.items())))
    b = compute_fingerprint(base_spec(), "int8", reordered, ORIN, dict(reversed(list(FILES.items()))), CALIB)
    assert a == b


def test_calibration_and_preprocess_count_only_when_calibrating() -> None:
    spec, _, identity, device, files, _ = base_args()
    fp16 = compute_fingerprint(spec, "fp16", identity, device, files, None)
    assert fp16.fields["calibration"] is None and fp16.fields["preprocess"] is None
    assert compute_fingerprint(spec, "fp16", identity, device, files, "d" * 64).key == fp16.key
    other_pre = with_spec(preprocess__mean=[0.5, 0.5, 0.5])(base_args())[0]
    assert compute_fingerprint(other_pre, "fp16", identity, device, files, None).key == fp16.key
    # A pre-quantized model (use_calib_mode: false) is not calibrated: the images do not matter.
    no_calib = base_spec(tensorrt={"use_calib_mode": False})
    a = compute_fingerprint(no_calib, "int8", identity, device, files, None)
    assert a.key == compute_fingerprint(no_calib, "int8", identity, device, files, "d" * 64).key


def test_missing_hashes_are_refused() -> None:
    spec, precision, identity, device, files, _ = base_args()
    with pytest.raises(ValueError, match="sha256 of the model files"):
        compute_fingerprint(spec, precision, identity, device, {}, CALIB)
    with pytest.raises(ValueError, match="calibration_hash"):
        compute_fingerprint(spec, precision, identity, device, files, None)


def test_renaming_model_files_keeps_the_key(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "inference.json").write_text('{"program": 1}')
    (a / "inference.pdiparams").write_bytes(bytes(range(256)) * 100)
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "inference.json", b / "yolo.json")
    shutil.copy(a / "inference.pdiparams", b / "yolo.pdiparams")
    spec_a = base_spec(model=str(a / "inference.json"), params=str(a / "inference.pdiparams"))
    spec_b = base_spec(model=str(b / "yolo.json"), params=str(b / "yolo.pdiparams"))
    hashes_a = hash_model_files([Path(spec_a.model), Path(str(spec_a.params))])
    hashes_b = hash_model_files([Path(spec_b.model), Path(str(spec_b.params))])
    assert hashes_a == hashes_b
    key_a = compute_fingerprint(spec_a, "int8", PADDLE, ORIN, hashes_a, CALIB).key
    assert compute_fingerprint(spec_b, "int8", PADDLE, ORIN, hashes_b, CALIB).key == key_a
    (b / "yolo.pdiparams").write_bytes(bytes(range(256)) * 99 + bytes(256))  # same size, other weights
    hashes_c = hash_model_files([Path(spec_b.model), Path(str(spec_b.params))])
    assert compute_fingerprint(spec_b, "int8", PADDLE, ORIN, hashes_c, CALIB).key != key_a


def test_sha256_file_across_chunk_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41 + b"tail"
    path = tmp_path / "blob"
    path.write_bytes(data)
    for chunk in (1, 7, 256, 1 << 20):
        assert sha256_file(path, chunk=chunk) == hashlib.sha256(data).hexdigest()


def test_hash_files(tmp_path: Path) -> None:
    (tmp_path / "set" / "sub").mkdir(parents=True)
    files = []
    for i, rel in enumerate(("a.jpg", "b.jpg", "sub/c.jpg")):
        path = tmp_path / "set" / rel
        path.write_bytes(bytes([i]) * 10)
        files.append(path)
    h = hash_files(files)
    assert h == hash_files(list(reversed(files)))
    assert h == hash_files(files, base=tmp_path / "set")
    assert h != hash_files(files[:2])
    files[0].write_bytes(b"changed")
    assert hash_files(files) != h
    files[0].write_bytes(bytes([0]) * 10)
    assert hash_files(files) == h
    files[0].rename(tmp_path / "set" / "z.jpg")
    assert hash_files([tmp_path / "set" / "z.jpg", *files[1:]]) != h
    assert hash_files([]) == hashlib.sha256(b"").hexdigest()


@settings(max_examples=50, deadline=None)
@given(workspace=st.integers(min_value=1 << 20, max_value=1 << 36), threads=st.integers(min_value=1, max_value=256))
def test_distinct_options_give_distinct_keys(workspace: int, threads: int) -> None:
    spec = base_spec(tensorrt={"workspace_size": workspace}, cpu={"threads": threads})
    fp = compute_fingerprint(spec, "int8", PADDLE, ORIN, FILES, CALIB)
    assert fp.fields["tensorrt"]["workspace_size"] == workspace
    other = base_spec(tensorrt={"workspace_size": workspace}, cpu={"threads": threads % 256 + 1})
    assert compute_fingerprint(other, "int8", PADDLE, ORIN, FILES, CALIB).key != fp.key


def test_the_accuracy_gate_in_force_is_part_of_the_key() -> None:
    spec, precision, identity, device, files, calib = base_args()

    def key(validation: Optional[ValidationSpec], golden: Optional[str]) -> str:
        gated = spec.model_copy(update={"validation": validation})
        return compute_fingerprint(gated, precision, identity, device, files, calib, golden).key

    cosine = ValidationSpec(inputs="/golden", metric="cosine")
    keys = {
        key(cosine, "a" * 64),
        key(cosine, "b" * 64),  # other golden images
        key(ValidationSpec(inputs="/golden", metric="cosine", tolerance={"int8": 0.5}), "a" * 64),
        key(ValidationSpec(inputs="/golden", metric="top1"), "a" * 64),
        key(None, None),  # no gate at all
    }
    assert len(keys) == 5
