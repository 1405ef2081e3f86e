"""Builds through the FAKE TensorRT: the calls that matter per precision, target and release."""

from __future__ import annotations

import json

import pytest

from agent.errors import BuildError, CapabilityError
from tests.support.tensorrt_models import classifier, half_model

CALIBRATION = {"images": "calib/*.png", "count": 8, "batch_size": 2}
FIXED = [{"name": "x", "shape": [2, 3, 8, 8]}]  # DLA runs fixed shapes only


def test_gpu_fp32_build_writes_plan_index_and_placement(rig):
    r = rig("10.3.0")
    entry = r.build(r.spec())
    assert sorted(p.name for p in entry.iterdir()) == ["engine.plan", "placement.json", "plan.json"]
    assert r.trt.called("builder.create_network") == [(0,)]  # explicit batch is the only kind in 10.x
    assert r.trt.called("config.set_memory_pool_limit") == [("WORKSPACE", 1 << 30)]
    assert r.trt.called("config.set_flag") == []  # fp32: no precision flags
    assert r.trt.called("config.add_optimization_profile") == [({"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))},)]
    index = json.loads((entry / "plan.json").read_text())
    assert index["plans"] == [{"file": "engine.plan", "dla_core": None}]
    assert index["tensorrt"] == "10.3.0" and index["device"] == "gpu:0"
    placement = json.loads((entry / "placement.json").read_text())["engines"][0]
    assert placement["summary"] == "7 layers on the GPU"
    assert r.info.placement.device == "gpu:0" and r.info.placement.route == "tensorrt"


def test_fp16_sets_fp16_flag_and_int8_sets_int8_with_fp16(rig):
    r = rig("8.6.1")
    r.build(r.spec(precision="fp16"))
    assert r.trt.called("config.set_flag") == [("FP16",)]
    r.trt.calls.clear()
    r.build(r.spec(precision="int8", calibration=CALIBRATION))
    assert r.trt.called("config.set_flag") == [("FP16",), ("INT8",)]


def test_explicit_batch_flag_before_tensorrt_10(rig):
    r = rig("8.5.2")
    r.build(r.spec())
    assert r.trt.called("builder.create_network") == [(1,)]  # 1 << EXPLICIT_BATCH


def test_int8_calibration_feeds_exact_batches_and_writes_the_cache(rig):
    r = rig("8.6.1")
    entry = r.build(r.spec(precision="int8", calibration=CALIBRATION))
    assert r.trt.called("calibrator.batch") == [([(2, 3, 8, 8)],)] * 4  # 8 images in batches of 2
    assert r.trt.called("config.set_calibration_profile") == [({"x": ((2, 3, 8, 8),) * 3},)]
    assert (entry / "calibration.cache").read_bytes().startswith(b"FAKE-TRT-CALIB")
    assert r.info.report["calibration"] == {"batches": 4, "cache_reused": False}
    assert [p.phase for p in r.progress if p.phase == "calibrate"][-1:] == ["calibrate"]
    assert r.progress[-1].phase == "serialize"


def test_calibration_cache_in_the_entry_is_reused(rig):
    r = rig("8.6.1")
    spec = r.spec(precision="int8", calibration=CALIBRATION)
    entry = r.build(spec)
    r.trt.calls.clear()
    (entry / "engine.plan").unlink()
    r.build(spec, entry=entry)  # a rebuild into the same entry
    assert r.trt.called("calibrator.batch") == []
    assert len(r.trt.called("calibrator.cache_read")) == 1
    assert r.info.report["calibration"] == {"batches": 0, "cache_reused": True}


def test_prequantized_qdq_model_builds_int8_without_calibration(rig):
    r = rig("10.3.0")
    spec = r.spec(model=classifier(r.tmp_path / "qdq.onnx", qdq=True), precision="int8")
    r.build(spec)
    assert ("INT8",) in r.trt.called("config.set_flag")
    assert r.trt.called("config.int8_calibrator") == []
    assert r.info.report["explicit_quantization"] is True


def test_int8_without_calibration_or_qdq_is_a_clear_error(rig):
    r = rig("10.3.0")
    with pytest.raises(BuildError, match=r"calibration images .* or a pre-quantized Q/DQ"):
        r.build(r.spec(precision="int8"))


def test_calibration_feed_failure_fails_the_build(rig):
    r = rig("8.6.1")

    def broken(inputs):
        yield {"x": __import__("numpy").zeros((1, 3, 4, 4), "float32")}  # wrong size from preprocessing

    r.feeds = lambda spec: broken
    with pytest.raises(BuildError, match=r"int8 calibration failed: calibration input 'x' has shape \[1, 3, 4, 4\]"):
        r.build(r.spec(precision="int8", calibration=CALIBRATION))


def test_dla_core_settings_gpu_fallback_and_placement_report(rig):
    r = rig("8.6.1", dla_cores=2, dla_rejects=("Softmax", "GlobalAveragePool"))
    entry = r.build(r.spec(target="dla:1", precision="fp16", inputs=FIXED))
    assert r.trt.called("config.default_device_type") == [("DLA",)]
    assert r.trt.called("config.DLA_core") == [(1,)]
    assert r.trt.called("config.set_flag") == [("FP16",), ("GPU_FALLBACK",)]
    report = json.loads((entry / "placement.json").read_text())["engines"][0]
    assert report["summary"] == "5 of 7 layers on DLA1, 2 fell back to GPU: gap (POOLING), softmax (SOFTMAX)"
    assert {layer["name"]: layer["device"] for layer in report["layers"]}["conv1"] == "DLA1"
    assert ("placement", report["summary"]) in [(p.phase, p.detail) for p in r.progress]
    assert r.info.placement.device == "dla:1"
    assert f"dla:1: {report['summary']}" in r.info.placement.notes


def test_dla_all_builds_one_engine_per_core_and_calibrates_once(rig):
    r = rig("8.5.2", dla_cores=2)
    entry = r.build(r.spec(target="dla:all", precision="int8", calibration=CALIBRATION, inputs=FIXED))
    assert (entry / "engine.dla0.plan").is_file() and (entry / "engine.dla1.plan").is_file()
    assert not (entry / "engine.plan").exists()
    assert r.trt.called("config.DLA_core") == [(0,), (1,)]
    assert len(r.trt.called("calibrator.batch")) == 4  # the second core reads the first core's cache
    assert len(r.trt.called("calibrator.cache_read")) == 1
    assert r.info.placement.device == "dla:0,1"


def test_dla_refuses_shape_ranges(rig):
    r = rig("10.3.0", dla_cores=2)
    with pytest.raises(BuildError, match=r"DLA runs fixed shapes only.*x \[1, 3, 8, 8\]\.\.\[4, 3, 8, 8\]"):
        r.build(r.spec(target="dla:0", precision="fp16"))
    r.build(r.spec(target="dla:0", precision="fp16", inputs=[]))  # batch-only dynamic: 1..max_batch_size (1)
    assert r.trt.called("config.add_optimization_profile")[-1] == ({"x": ((1, 3, 8, 8),) * 3},)


def test_dla_without_gpu_fallback_refuses_layers_dla_cannot_run(rig):
    r = rig("10.3.0", dla_cores=2, dla_rejects=("Softmax",))
    spec = r.spec(target="dla:0", precision="fp16", tensorrt={"dla_gpu_fallback": False}, inputs=FIXED)
    with pytest.raises(BuildError, match=r"1 layer\(s\) cannot run on dla:0 \(softmax\).*dla_gpu_fallback"):
        r.build(spec)
    assert r.trt.called("builder.build_serialized_network") == []


def test_no_dla_falls_back_to_gpu_with_a_note(rig):
    r = rig("10.3.0", dla_cores=0)
    entry = r.build(r.spec(target="dla:0", precision="fp16"))
    assert r.trt.called("config.default_device_type") == []
    assert r.info.placement.device == "gpu:0"
    assert "no DLA under TensorRT 10.3.0" in r.info.placement.notes[0]
    assert json.loads((entry / "plan.json").read_text())["plans"][0]["dla_core"] is None


def test_required_dla_target_missing_is_a_capability_error(rig):
    r = rig("10.3.0", dla_cores=0)
    with pytest.raises(CapabilityError, match="require_target: false"):
        r.build(r.spec(target="dla:0", precision="fp16", require_target=True))


def test_dla1_on_a_single_core_device_uses_dla0(rig):
    r = rig("10.3.0", dla_cores=1)
    r.build(r.spec(target="dla:1", precision="fp16", inputs=FIXED))
    assert r.trt.called("config.DLA_core") == [(0,)]
    assert "dla:1 absent" in r.info.placement.notes[0]


def test_timing_cache_is_stored_and_reused_across_builds(rig):
    r = rig("10.3.0")
    spec = r.spec()
    r.build(spec)
    stored = r.tmp_path / "timing" / "timing.cache"
    assert stored.is_file()
    assert len(r.trt.called("timing.miss")) == 1 and r.info.report["timing_cache_reused"] is False
    size = stored.stat().st_size
    r.trt.calls.clear()
    r.build(spec)  # another entry, same device
    assert r.trt.called("config.create_timing_cache")[0] == (size,)
    assert len(r.trt.called("timing.hit")) == 1 and r.info.report["timing_cache_reused"] is True


def test_timing_cache_from_another_release_is_replaced(rig):
    old = rig("10.0.1")
    old.build(old.spec())
    new = rig("10.3.0")  # same tmp_path: same timing-cache directory
    new.build(new.spec())
    assert new.trt.called("config.set_timing_cache")[0][1] is False  # the stale one was refused
    assert new.info.report["timing_cache_reused"] is False
    assert b'"version": "10.3.0"' in (new.tmp_path / "timing" / "timing.cache").read_bytes()


def test_timing_cache_can_be_switched_off(rig):
    r = rig("10.3.0")
    r.build(r.spec(tensorrt={"timing_cache": False}))
    assert r.trt.called("config.create_timing_cache") == []
    assert not (r.tmp_path / "timing").exists()


def test_optimization_level_on_8_6_and_a_note_on_8_5(rig):
    r = rig("8.6.1")
    r.build(r.spec(tensorrt={"optimization_level": 5}))
    assert r.trt.called("config.builder_optimization_level") == [(5,)]
    old = rig("8.5.2")
    old.build(old.spec(tensorrt={"optimization_level": 5}))
    assert any("optimization_level ignored" in n for n in old.info.placement.notes)


def test_progress_monitor_on_10_and_phase_events_everywhere(rig):
    r = rig("10.3.0")
    r.build(r.spec())
    phases = [p.phase for p in r.progress]
    assert phases[:2] == ["parse", "configure"] and phases[-1] == "serialize"
    assert "gpu:0: Building engine" in [p.detail for p in r.progress]
    old = rig("8.6.1")
    old.build(old.spec())
    assert r.trt.called("config.progress_monitor") and not old.trt.called("config.progress_monitor")
    assert [p.phase for p in old.progress] == ["parse", "configure", "build", "serialize"]


def test_parser_errors_are_all_reported(rig):
    r = rig("10.3.0", parser_rejects=("Softmax", "GlobalAveragePool"))
    with pytest.raises(BuildError) as err:
        r.build(r.spec())
    text = str(err.value)
    assert "2 problem(s)" in text
    assert "node 2 gap (GlobalAveragePool): No importer registered for op: GlobalAveragePool" in text
    assert "node 6 softmax (Softmax)" in text and "Fix:" in text


def test_parser_errors_on_8_5_have_node_indices_only(rig):
    r = rig("8.5.2", parser_rejects=("Softmax",))
    with pytest.raises(BuildError, match=r"node 6: No importer registered for op: Softmax"):
        r.build(r.spec())


def test_builder_failure_reports_tensorrt_reason(rig):
    r = rig("10.3.0", fail_build=True)
    with pytest.raises(BuildError, match=r"failed to build the gpu:0 fp32 engine: FAKE TensorRT: out of memory.*"
                                         r"workspace_size"):
        r.build(r.spec())


def test_dynamic_input_needs_a_range_and_batch_only_uses_max_batch_size(rig):
    r = rig("10.3.0")
    r.build(r.spec(inputs=[], tensorrt={"max_batch_size": 8}))
    assert r.trt.called("config.add_optimization_profile") == [({"x": ((1, 3, 8, 8), (8, 3, 8, 8), (8, 3, 8, 8))},)]
    with pytest.raises(BuildError, match=r"dimension 1 must be 3"):
        r.build(r.spec(inputs=[{"name": "x", "shape": [1, 4, 8, 8]}]))
    with pytest.raises(BuildError, match=r"\['y'\] are not inputs of the network"):
        r.build(r.spec(inputs=[{"name": "y", "shape": [1, 3, 8, 8]}]))


def test_static_model_needs_no_profile(rig):
    r = rig("10.3.0")
    r.build(r.spec(model=classifier(r.tmp_path / "static.onnx", batch=1), inputs=[]))
    assert r.trt.called("config.add_optimization_profile") == []


def test_cpu_target_is_refused(rig):
    r = rig("10.3.0")
    with pytest.raises(BuildError, match="no CPU target"):
        r.build(r.spec(target="cpu"))


class TestTensorRT11:
    def test_fp32_builds_strongly_typed_without_flags(self, rig):
        r = rig("11.0.0")
        r.build(r.spec())
        assert r.trt.called("builder.create_network") == [(0,)]
        assert r.trt.called("config.set_flag") == []

    def test_fp16_on_an_fp32_model_says_strong_typing(self, rig):
        r = rig("11.0.0")
        with pytest.raises(BuildError, match=r"strongly typed networks only.*no fp16 tensors.*autocast"):
            r.build(r.spec(precision="fp16"))

    def test_fp16_model_with_half_types_builds(self, rig):
        r = rig("11.0.0")
        r.build(r.spec(model=half_model(r.tmp_path / "half.onnx"), precision="fp16", inputs=[]))
        assert r.trt.called("config.set_flag") == []
        assert r.info.placement.precision == "fp16"

    def test_int8_needs_qdq_and_never_calibrates(self, rig):
        r = rig("11.0.0")
        with pytest.raises(BuildError, match=r"no Q/DQ nodes"):
            r.build(r.spec(precision="int8", calibration=CALIBRATION))
        r.build(r.spec(model=classifier(r.tmp_path / "qdq.onnx", qdq=True), precision="int8"))
        assert r.trt.called("config.set_flag") == [] and r.trt.called("calibrator.batch") == []

    def test_no_dla_in_11_falls_back(self, rig):
        r = rig("11.0.0")
        r.build(r.spec(target="dla:0", precision="fp16", model=half_model(r.tmp_path / "half.onnx"), inputs=[]))
        assert r.info.placement.device == "gpu:0"


def test_int8_calibration_through_the_real_preprocessing(rig, tmp_path):
    import cv2
    import numpy as np

    from agent.engines.build import calibration_feeds_for
    from agent.processing.preprocess import calibration_feeds
    from agent.sources.files import list_images

    images = tmp_path / "calib"
    images.mkdir()
    rng = np.random.default_rng(5)
    for i in range(5):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (16 + i, 20, 3), dtype=np.uint8))
    r = rig("10.3.0")
    r.feeds = lambda spec: calibration_feeds_for(spec, calibration_feeds, list_images)
    spec = r.spec(precision="int8", preprocess={"resize": [8, 8]},
                  calibration={"images": str(images / "*.png"), "count": 5, "batch_size": 2})
    entry = r.build(spec)
    assert r.trt.called("calibrator.batch") == [([(2, 3, 8, 8)],)] * 2  # 5 images: 2 full batches
    assert 0 < json.loads((entry / "calibration.cache").read_bytes()[len(b"FAKE-TRT-CALIB\n"):])["amax"] <= 1.0


def test_calib_mode_off_without_qdq_is_explained(rig):
    r = rig("10.3.0")
    spec = r.spec(precision="int8", calibration=CALIBRATION, tensorrt={"use_calib_mode": False})
    with pytest.raises(BuildError, match=r"use_calib_mode: false says the model is pre-quantized"):
        r.build(spec)
