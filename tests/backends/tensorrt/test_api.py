"""The version adapter's choices per simulated release, and this machine's (absent) TensorRT."""

from __future__ import annotations

import logging

import pytest

from agent.backends.tensorrt.api import TrtApi, TrtLog, TrtVersion, load_tensorrt
from agent.backends.tensorrt.cuda import CudaDevice
from agent.errors import CapabilityError
from tests.support.fake_tensorrt import FakeTensorRT


def test_version_parsing():
    assert TrtVersion.parse("8.6.1.6") == TrtVersion(8, 6, 1)
    assert TrtVersion.parse("10.3.0.30") > TrtVersion.parse("8.6.1")
    assert str(TrtVersion.parse("11")) == "11.0.0"


@pytest.mark.parametrize(("version", "typed_only", "calibrator", "monitor"), [
    ("8.5.2", False, True, False),
    ("8.6.1", False, True, False),
    ("10.3.0", False, True, True),
    ("11.0.0", True, False, True),
])
def test_feature_detection_per_release(version, typed_only, calibrator, monitor):
    api = TrtApi(FakeTensorRT(version))
    assert (api.strongly_typed_only, api.has_calibrator, api.has_progress_monitor) == (typed_only, calibrator, monitor)


def test_optimization_level_exists_from_8_6():
    for version, supported in (("8.5.2", False), ("8.6.1", True)):
        trt = FakeTensorRT(version)
        api = TrtApi(trt)
        config = api.builder(api.logger(TrtLog())).create_builder_config()
        assert api.set_optimization_level(config, 2) is supported


def test_workspace_falls_back_to_max_workspace_size():
    class OldConfig:  # TensorRT < 8.4 had only this attribute
        max_workspace_size = 0

    config = OldConfig()
    TrtApi(FakeTensorRT("8.5.2")).set_workspace(config, 123)  # type: ignore[arg-type]
    assert config.max_workspace_size == 123


def test_dla_cores_read_from_the_builder():
    api = TrtApi(FakeTensorRT("8.6.1", dla_cores=2))
    assert api.dla_cores(api.builder(api.logger(TrtLog()))) == 2


def test_tensorrt_log_is_quiet_and_keeps_errors(caplog):
    sink = TrtLog(keep=2)
    with caplog.at_level(logging.DEBUG, logger="agent.backends.tensorrt.api"):
        for i in range(3):
            sink.record(1, f"error {i}")
        sink.record(3, "info")
    assert sink.take_errors() == ["error 1", "error 2"] and sink.errors == []
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3 + [logging.DEBUG]


def test_this_machine_has_no_tensorrt_only_stubs():
    # tensorrt-stubs makes `import tensorrt` succeed as an empty namespace package.
    with pytest.raises(CapabilityError, match="JetPack"):
        load_tensorrt()


def test_this_machine_has_no_pycuda():
    with pytest.raises(CapabilityError, match=r"needs pycuda .*deploy/build-pycuda\.sh"):
        CudaDevice.open()
