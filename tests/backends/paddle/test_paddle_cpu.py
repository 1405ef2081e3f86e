"""The Paddle backend for REAL on this machine's CPU wheel, with models exported by paddle.jit.save."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import paddle.inference as pi
import pytest

from agent.backends.paddle.backend import OPTIMIZED_MODEL, RECORD_FILE, BuildRecord, PaddleBackend, PaddlePredictor
from agent.backends.paddle.config import ShapeRange
from agent.backends.paddle.feeds import calibration_inputs
from agent.backends.paddle.params import check_params_size
from agent.backends.paddle.signature import read_signature
from agent.engines.build import calibration_feeds_for
from agent.errors import BuildError, CacheError, CapabilityError, PredictorError
from agent.processing.preprocess import calibration_feeds
from agent.progress import Progress, ProgressTimer
from agent.sources.files import list_images
from tests.support.models import BOXES_PER_IMAGE, KINDS, NUM_CLASSES, SEG_CLASSES, ExportedModel, random_images

DYNAMIC = [{"name": "x", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}]


def _timer(events: List[Progress]) -> ProgressTimer:
    return ProgressTimer(events.append, "test")


def _build_load(backend: PaddleBackend, model: ExportedModel, entry: Path, **fields: Any) -> PaddlePredictor:
    spec = model.spec(inputs=DYNAMIC, **fields)
    entry.mkdir(parents=True, exist_ok=True)
    backend.build(spec, spec.precision, entry, _timer([]))
    return backend.load(spec, spec.precision, entry)


def _direct(model: ExportedModel, x: np.ndarray) -> List[np.ndarray]:
    """The seed's example, verbatim in spirit: Config, handles, copy_from_cpu, run, copy_to_cpu."""
    config = pi.Config(str(model.model), str(model.params))
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(2)
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    handle = predictor.get_input_handle("x")
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


@pytest.mark.parametrize("kind", KINDS)
def test_pir_and_legacy_load_and_match_direct_paddle_inference(paddle_models, tmp_path, kind):
    backend = PaddleBackend()
    x = random_images((2, 3, 32, 48), 1, seed=3)[0]
    outs: Dict[str, List[np.ndarray]] = {}
    for fmt, name in (("pir", kind), ("legacy", f"{kind}-legacy")):
        model = paddle_models[name]
        predictor = _build_load(backend, model, tmp_path / fmt)
        got = predictor.infer({"x": x})
        want = _direct(model, x)
        assert [o.name for o in predictor.outputs] == list(got)
        for value, expected in zip(got.values(), want):
            np.testing.assert_array_equal(value, expected)
        outs[fmt] = list(got.values())
    # same weights in both formats
    for a, b in zip(outs["pir"], outs["legacy"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fallback_warning_is_logged_once_per_model_with_the_reason(paddle_models, tmp_path, caplog):
    backend = PaddleBackend()
    caplog.set_level(logging.WARNING, logger="agent.backends.paddle.backend")
    spec = paddle_models["classifier"].spec(inputs=DYNAMIC, target="gpu", precision="fp16")
    backend.build(spec, "fp16", tmp_path, _timer([]))
    predictor = backend.load(spec, "fp16", tmp_path)
    backend.load(spec, "fp16", tmp_path).clone()
    backend.reference(spec)

    records = [r for r in caplog.records if r.getMessage() == "predictor.fallback"]
    assert len(records) == 1
    fields: Any = records[0]
    assert (fields.model, fields.requested_target, fields.requested_precision) == ("classifier", "gpu", "fp16")
    assert (fields.device, fields.precision, fields.route) == ("cpu", "fp32", "paddle-native")
    assert fields.reason == "paddle is a CPU build (no CUDA/TensorRT)"
    assert predictor.placement.device == "cpu"
    assert predictor.placement.route == "paddle-native"
    assert predictor.placement.precision == "fp32"
    assert any("paddle is a CPU build" in n for n in predictor.placement.notes)
    assert any("fp16" in n for n in predictor.placement.notes)

    other = paddle_models["detector"].spec(inputs=DYNAMIC, target="dla:0", precision="fp16")
    backend.plan(other, "fp16")
    assert len([r for r in caplog.records if r.getMessage() == "predictor.fallback"]) == 2


def test_cpu_target_at_fp32_runs_without_warning_or_notes(paddle_models, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    predictor = _build_load(PaddleBackend(), paddle_models["classifier"], tmp_path, target="cpu")
    assert predictor.placement.notes == []
    assert not [r for r in caplog.records if r.getMessage() == "predictor.fallback"]


def test_require_target_raises_capability_error_instead_of_falling_back(paddle_models, tmp_path):
    spec = paddle_models["classifier"].spec(inputs=DYNAMIC, target="gpu", precision="fp16", require_target=True)
    with pytest.raises(CapabilityError) as err:
        PaddleBackend().build(spec, "fp16", tmp_path, _timer([]))
    message = str(err.value)
    assert "classifier" in message and "paddle is a CPU build" in message and "require_target: false" in message
    assert not (tmp_path / RECORD_FILE).exists()


def test_clone_gives_bit_identical_outputs(paddle_models, tmp_path):
    predictor = _build_load(PaddleBackend(), paddle_models["segmenter"], tmp_path)
    clone = predictor.clone()
    for x in random_images((1, 3, 24, 40), 3):
        a, b = predictor.infer({"x": x}), clone.infer({"x": x})
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_dynamic_batch_and_spatial_shapes(paddle_models, tmp_path):
    backend = PaddleBackend()
    classifier = _build_load(backend, paddle_models["classifier-legacy"], tmp_path / "c")
    segmenter = _build_load(backend, paddle_models["segmenter"], tmp_path / "s")
    detector = _build_load(backend, paddle_models["detector"], tmp_path / "d")
    seg_ref = backend.reference(paddle_models["segmenter"].spec())
    for shape in ((1, 3, 16, 16), (2, 3, 40, 24), (1, 3, 64, 48)):
        x = random_images(shape, 1)[0]
        (probs,) = classifier.infer({"x": x}).values()
        assert probs.shape == (shape[0], NUM_CLASSES)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        (logits,) = segmenter.infer({"x": x}).values()
        assert logits.shape == (shape[0], SEG_CLASSES, shape[2], shape[3])
        np.testing.assert_allclose(logits, next(iter(seg_ref.infer({"x": x}).values())), rtol=1e-4, atol=1e-5)
        bbox, num = detector.infer({"x": x}).values()
        assert bbox.shape == (shape[0] * BOXES_PER_IMAGE, 6) and num.tolist() == [BOXES_PER_IMAGE] * shape[0]
        assert np.all(bbox[:, 2] < bbox[:, 4]) and np.all(bbox[:, 3] < bbox[:, 5])
        assert np.all(bbox[:, 2] >= 0) and np.all(bbox[:, 4] <= shape[3])
        assert set(np.unique(bbox[:, 0])) <= {0.0, 1.0, 2.0}


def test_tensor_info_comes_from_the_manifest_and_the_program(paddle_models, tmp_path):
    predictor = _build_load(PaddleBackend(), paddle_models["detector-legacy"], tmp_path)
    (x,) = predictor.inputs
    assert (x.name, x.shape, x.dtype) == ("x", (-1, 3, -1, -1), "float32")
    assert [(o.shape, o.dtype) for o in predictor.outputs] == [((-1, 6), "float32"), ((-1,), "int32")]
    for model in (paddle_models["classifier"], paddle_models["classifier-legacy"]):
        sig = read_signature(model.model)
        assert sig.inputs["x"].shape == (-1, 3, -1, -1)
        assert [d.shape for d in sig.outputs.values()] == [(-1, NUM_CLASSES)]


def test_cpu_optimized_program_cache_round_trip(paddle_models, tmp_path):
    """Legacy program: build writes _optimized.* and load uses it with IR optimization off;
    the entry still loads after being renamed (the cache builds in a temp dir, then renames)."""
    model = paddle_models["classifier-legacy"]
    spec = model.spec(inputs=DYNAMIC, target="cpu")
    built = tmp_path / "tmp-entry"
    built.mkdir()
    events: List[Progress] = []
    info = PaddleBackend().build(spec, "fp32", built, _timer(events))
    assert info.report["optimized_program"] is True
    assert [e.detail for e in events if e.phase == "warmup"] == ["min shapes", "opt shapes", "max shapes"]
    final = tmp_path / "entry"
    built.rename(final)
    record = BuildRecord.read(final)
    assert (record.program, record.ir_optim) == (OPTIMIZED_MODEL, False)

    predictor = PaddleBackend().load(spec, "fp32", final)  # a fresh process would do the same
    for x in random_images((1, 3, 32, 32), 3, seed=7):
        (got,) = predictor.infer({"x": x}).values()
        np.testing.assert_array_equal(got, _direct(model, x)[0])

    (final / OPTIMIZED_MODEL).unlink()
    with pytest.raises(CacheError, match=r"_optimized\.pdmodel"):
        PaddleBackend().load(spec, "fp32", final)


def test_pir_program_is_loaded_from_the_original_files(paddle_models, tmp_path):
    spec = paddle_models["classifier"].spec(inputs=DYNAMIC, target="cpu")
    info = PaddleBackend().build(spec, "fp32", tmp_path, _timer([]))
    assert "optimized_program" not in info.report
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]
    assert BuildRecord.read(tmp_path).program is None


def test_load_without_a_record_is_a_cache_error(paddle_models, tmp_path):
    with pytest.raises(CacheError, match=RECORD_FILE):
        PaddleBackend().load(paddle_models["classifier"].spec(), "fp32", tmp_path)


def test_reference_is_native_fp32_without_ir_optimization(paddle_models):
    model = paddle_models["classifier"]
    reference = PaddleBackend().reference(model.spec(precision="int8"))
    assert (reference.placement.route, reference.placement.device, reference.placement.precision) == (
        "paddle-native", "cpu", "fp32")
    x = random_images((1, 3, 32, 32), 1)[0]
    (got,) = reference.infer({"x": x}).values()
    np.testing.assert_allclose(got, _direct(model, x)[0], rtol=1e-4, atol=1e-6)


def test_errors_name_the_problem(paddle_models, tmp_path):
    backend = PaddleBackend()
    predictor = _build_load(backend, paddle_models["classifier"], tmp_path / "a")
    with pytest.raises(PredictorError, match="missing input 'x'"):
        predictor.infer({"image": np.zeros((1, 3, 8, 8), "float32")})
    with pytest.raises(PredictorError, match="input shapes"):
        predictor.infer({"x": np.zeros((1, 5, 8, 8), "float32")})
    predictor.close()
    with pytest.raises(PredictorError, match="closed"):
        predictor.infer({"x": np.zeros((1, 3, 8, 8), "float32")})
    wrong = paddle_models["classifier"].spec(inputs=[{"name": "image", "shape": [1, 3, 32, 32]}])
    (tmp_path / "b").mkdir()
    with pytest.raises(BuildError, match=r"\['image'\] are not inputs of inference.json"):
        backend.build(wrong, "fp32", tmp_path / "b", _timer([]))


def test_identity_names_paddle_tensorrt_and_cuda():
    identity = PaddleBackend().identity()
    assert identity["paddle"].startswith(pi.get_version().splitlines()[0].split(":")[1].strip())
    assert identity["tensorrt"] == "compile 0.0.0 runtime 0.0.0"
    assert identity["cuda"] == "none"


def test_int8_on_the_cpu_build_runs_fp32_without_calibrating(paddle_models, tmp_path):
    images = tmp_path / "calib"
    images.mkdir()
    spec = paddle_models["classifier-legacy"].spec(
        inputs=DYNAMIC, precision="int8", calibration={"images": str(images / "*.png"), "count": 4})

    def never(*_: Any) -> Any:
        raise AssertionError("calibration must not run on the CPU build")

    (tmp_path / "entry").mkdir()
    info = PaddleBackend().build(spec, "int8", tmp_path / "entry", _timer([]), never)
    assert info.placement.precision == "fp32"
    assert any("int8" in n for n in info.placement.notes)


def test_the_preparers_calibration_feeds_use_the_shared_preprocessing(paddle_models, tmp_path):
    rng = np.random.RandomState(0)
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.randint(0, 255, (30 + i, 50, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    spec = paddle_models["classifier-legacy"].spec(
        inputs=DYNAMIC, precision="int8",
        calibration={"images": str(tmp_path), "count": 5, "batch_size": 2},
        preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    )
    backend = PaddleBackend()
    predictor = backend.reference(spec)
    ranges = {"x": ShapeRange([1, 3, 16, 16], [1, 3, 32, 32], [2, 3, 64, 64])}
    inputs = calibration_inputs(predictor.inputs, ranges)
    assert [(i.name, i.shape) for i in inputs] == [("x", (-1, 3, 32, 32))]
    batches = list(calibration_feeds_for(spec, calibration_feeds, list_images)(inputs))
    assert [b["x"].shape for b in batches] == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]
    assert all(b["x"].dtype == np.float32 for b in batches)
    assert float(batches[0]["x"].min()) >= -2.0 - 1e-6 and float(batches[0]["x"].max()) <= 2.0 + 1e-6
    for batch in batches:  # every batch runs through the model
        predictor.infer(batch)

    empty = spec.model_copy(update={"calibration": spec.calibration.model_copy(
        update={"images": str(tmp_path / "none*.png")})})
    with pytest.raises(BuildError, match="matched no images"):
        list(calibration_feeds_for(empty, calibration_feeds, list_images)(inputs))



def test_warm_up_gives_a_short_model_blocktime_0_and_a_long_one_the_default(paddle_models, tmp_path, monkeypatch):
    import ctypes
    import os
    import threading

    from agent.backends.paddle.openmp import blocktime_for, set_thread_blocktime

    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    predictor = _build_load(PaddleBackend(), paddle_models["classifier"], tmp_path)
    omp = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD)
    seen: Dict[str, int] = {}

    def short_model() -> None:
        predictor.warm_up({"x": random_images((1, 3, 24, 40), 1)[0]})
        seen["short"] = omp.kmp_get_blocktime()

    def long_model() -> None:
        # a new thread can inherit an ended one's setting, so a long model sets the default back
        assert set_thread_blocktime(blocktime_for(200.0) or 0)
        seen["long"] = omp.kmp_get_blocktime()

    for target in (short_model, long_model):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(60)
    assert seen == {"short": 0, "long": 200}  # the tiny test model's inference takes well under 15 ms
    monkeypatch.setenv("KMP_BLOCKTIME", "50")
    assert blocktime_for(0.1) is None  # the operator's setting wins


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_a_pdiparams_missing_its_last_bytes_is_refused_by_name(paddle_models, tmp_path, fmt):
    model = paddle_models["classifier" if fmt == "pir" else "classifier-legacy"]
    assert check_params_size(model.params) > 0  # the exported file walks to its exact end
    cut = tmp_path / "model" / model.params.name
    cut.parent.mkdir()
    cut.write_bytes(model.params.read_bytes()[:-7])
    program = tmp_path / "model" / model.model.name
    shutil.copy(model.model, program)
    spec = replace(model, model=program, params=cut).spec(inputs=DYNAMIC)
    (tmp_path / "entry").mkdir()
    with pytest.raises(BuildError, match=r"model 'classifier.*params .*inference.pdiparams: parameter \d+ declares "
                                         r"\d+ bytes of data, the file ends 7 bytes short"):
        PaddleBackend().build(spec, "fp32", tmp_path / "entry", _timer([]))
