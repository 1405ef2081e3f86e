"""The model manifest: the only schema for models and pipelines.

Field types use ``typing`` generics (not ``list[...]``) because pydantic evaluates
annotations at run time and the agent must run on Python 3.8 (JetPack 5).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DLA_TARGET = re.compile(r"^dla:(0|1|all)$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
HASHED_FILES: Tuple[str, ...] = ("model", "params")
PATH_MAX = 4096  # Linux PATH_MAX; also bounds the work of resolving a hostile path
# The largest input tensor (at its max shape) a manifest may declare: beyond it the agent's own
# buffers for one batch would not fit beside the model on a 4 GB Jetson.
MAX_TENSOR_BYTES = 1 << 30
DTYPE_BYTES: Dict[str, int] = {"float32": 4, "float16": 2, "uint8": 1, "int32": 4, "int64": 8}

Precision = Literal["fp32", "fp16", "int8"]
Backend = Literal["paddle", "tensorrt"]
PRECISION_ORDER: Tuple[str, ...] = ("int8", "fp16", "fp32")


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere: a typo must never be silently ignored. The loader validates
    strictly (agent/manifest/load.py: no number from a string or a boolean). NaN and infinity are
    refused in every float field: no scale, mean, tolerance or timeout means anything with them, and
    they turn into exceptions far from the manifest (fingerprints, lookup tables, sleeps)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Shape = List[int]


class InputSpec(StrictModel):
    """One model input: a fixed ``shape`` or a dynamic ``min``/``opt``/``max`` range."""

    name: str = Field(min_length=1, max_length=256)
    shape: Optional[Shape] = None
    min: Optional[Shape] = None
    opt: Optional[Shape] = None
    max: Optional[Shape] = None
    dtype: Literal["float32", "float16", "uint8", "int32", "int64"] = "float32"

    @model_validator(mode="after")
    def _one_form(self) -> InputSpec:
        dynamic = (self.min, self.opt, self.max)
        if self.shape is not None:
            if any(d is not None for d in dynamic):
                raise ValueError("give either 'shape' or 'min'/'opt'/'max', not both")
            _check_dims(self.shape, "shape")
            _check_size(self.shape, self.dtype, "shape")
            return self
        if any(d is None for d in dynamic):
            raise ValueError("give a fixed 'shape', or all three of 'min', 'opt' and 'max'")
        lo, mid, hi = dynamic
        assert lo is not None and mid is not None and hi is not None
        for label, dims in (("min", lo), ("opt", mid), ("max", hi)):
            _check_dims(dims, label)
        if not len(lo) == len(mid) == len(hi):
            raise ValueError("'min', 'opt' and 'max' must have the same rank")
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise ValueError(f"need min <= opt <= max in every dimension (got {lo}, {mid}, {hi})")
        _check_size(hi, self.dtype, "max")
        return self

    @property
    def dynamic(self) -> bool:
        return self.shape is None

    def shapes(self) -> Tuple[Shape, Shape, Shape]:
        """(min, opt, max); all equal for a fixed shape."""
        if self.shape is not None:
            return self.shape, self.shape, self.shape
        assert self.min is not None and self.opt is not None and self.max is not None
        return self.min, self.opt, self.max


def _check_dims(dims: Shape, label: str) -> None:
    if not 1 <= len(dims) <= 8:
        raise ValueError(f"'{label}' must have 1 to 8 dimensions (got {len(dims)})")
    if any(d < 1 or d > 1 << 16 for d in dims):
        raise ValueError(f"'{label}' dimensions must be between 1 and 65536 (got {dims})")


def _check_size(dims: Shape, dtype: str, label: str) -> None:
    size = DTYPE_BYTES[dtype]
    for d in dims:
        size *= d
    if size > MAX_TENSOR_BYTES:
        raise ValueError(f"'{label}' {dims} of {dtype} is a tensor of {size / (1 << 30):.3g} GiB; at most "
                         f"{MAX_TENSOR_BYTES >> 30} GiB fits: check the dimensions (a batch, channels, height, width)")


class TensorRTOptions(StrictModel):
    """Every parameter of Paddle's ``enable_tensorrt_engine`` plus TensorRT builder options."""

    workspace_size: int = Field(1 << 30, ge=1 << 20, le=1 << 36, description="bytes")
    max_batch_size: int = Field(1, ge=1, le=1024)
    min_subgraph_size: int = Field(3, ge=1, le=10000)
    use_static: bool = True
    # None = decided from precision and calibration: int8 + calibration images -> True.
    use_calib_mode: Optional[bool] = None
    disabled_ops: List[str] = Field(default_factory=list)
    optimization_level: Optional[int] = Field(None, ge=0, le=5)
    dla_gpu_fallback: bool = True
    timing_cache: bool = True


class CpuOptions(StrictModel):
    threads: int = Field(2, ge=1, le=256)
    mkldnn: bool = True


class CalibrationSpec(StrictModel):
    """INT8 post-training calibration images, fed through the model's own preprocessing."""

    images: str = Field(min_length=1, max_length=PATH_MAX,
                        description="glob, directory or file, relative to the manifest")
    count: int = Field(100, ge=1, le=100000)
    batch_size: int = Field(1, ge=1, le=256)


class ValidationSpec(StrictModel):
    """The accuracy gate: an optimized engine must match a full-precision reference on golden inputs."""

    inputs: str = Field(min_length=1, max_length=PATH_MAX, description="glob, directory or file of golden images")
    metric: Literal["max_abs", "cosine", "top1", "box_iou"] = "cosine"
    tolerance: Dict[Precision, float] = Field(default_factory=dict)
    count: int = Field(16, ge=1, le=10000)


class PreprocessSpec(StrictModel):
    resize: Optional[Tuple[int, int]] = Field(None, description="[width, height]")
    keep_aspect: bool = False
    pad_value: int = Field(114, ge=0, le=255)
    color: Literal["rgb", "bgr", "gray"] = "rgb"
    scale: float = 1.0 / 255.0
    mean: List[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: List[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    layout: Literal["nchw", "nhwc"] = "nchw"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    input: Optional[str] = Field(None, description="input tensor name; default: the first input")
    # Extra inputs some detectors need (PaddleDetection: im_shape, scale_factor).
    extra_inputs: Dict[str, Literal["im_shape", "scale_factor"]] = Field(default_factory=dict)
    # PP-OCR's size rules for inputs with dynamic height and width (agent/processing/geometry.py);
    # null: the default of the model's postprocess.type (text_detection: limit_side, text_recognition:
    # text_line), else none. Only used when ``resize`` is not given.
    resize_rule: Optional[Literal["limit_side", "text_line"]] = None
    limit_side_len: int = Field(960, ge=1, le=16384, description="limit_side: the side length limit")
    limit_type: Literal["max", "min"] = "max"
    size_multiple: int = Field(32, ge=1, le=1024, description="limit_side: sides rounded to a multiple of this")
    line_min_width: int = Field(320, ge=1, le=65536, description="text_line: narrowest input")
    line_max_width: int = Field(3200, ge=1, le=65536, description="text_line: widest input")

    @field_validator("resize", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        # ModelSpec's "before" validator hands preprocess on as Python data, where strict mode takes no list
        # for a tuple: YAML has only lists.
        return tuple(v) if isinstance(v, list) else v

    @field_validator("resize")
    @classmethod
    def _positive(cls, v: Optional[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
        if v is not None and not (0 < v[0] <= 16384 and 0 < v[1] <= 16384):
            raise ValueError("resize must be [width, height] with each between 1 and 16384")
        return v

    @model_validator(mode="after")
    def _normalize(self) -> PreprocessSpec:
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, 3):
                raise ValueError(f"{label}: give 1 value, or 3 (one per channel) (got {len(values)})")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std: values must not be 0, the input is divided by them (got {self.std})")
        if self.resize is not None and self.resize_rule is not None:
            raise ValueError("resize_rule: give either a fixed 'resize' or a 'resize_rule', not both")
        if self.line_min_width > self.line_max_width:
            raise ValueError(f"line_min_width: must not exceed line_max_width ({self.line_min_width} > "
                             f"{self.line_max_width})")
        return self


PostprocessType = Literal["classification", "detection", "segmentation", "text_detection", "text_recognition", "raw"]
# The resize rule a post-processing type implies when the manifest gives neither resize nor resize_rule.
DEFAULT_RESIZE_RULES: Dict[str, str] = {"text_detection": "limit_side", "text_recognition": "text_line"}


class PostprocessSpec(StrictModel):
    type: PostprocessType = "raw"
    output: Optional[str] = Field(None, description="output tensor name; default: the first output")
    labels: List[str] = Field(default_factory=list)
    labels_file: Optional[str] = Field(None, min_length=1, max_length=PATH_MAX, description="one label per line")
    top_k: int = Field(5, ge=1, le=1000)
    softmax: bool = False
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    nms_iou: Optional[float] = Field(0.45, ge=0.0, le=1.0, description="null when the model does NMS")
    box_format: Literal["xyxy", "cxcywh", "paddle"] = "xyxy"
    normalized_boxes: bool = False
    max_detections: Optional[int] = Field(None, ge=1, le=10000,
                                          description="null: 100 for detection, 1000 for text_detection")
    # text_detection (PP-OCR's DB head)
    mask_threshold: float = Field(0.3, ge=0.0, le=1.0, description="probability that makes a pixel text")
    unclip_ratio: float = Field(1.5, ge=0.0, le=10.0, description="how far a text region is grown")
    min_size: float = Field(3.0, ge=0.0, le=10000.0, description="shortest side of a region kept, input pixels")
    dilate: bool = False
    max_values: int = Field(64, ge=0, le=1 << 20, description="raw: include values up to this many elements")

    @model_validator(mode="after")
    def _one_label_source(self) -> PostprocessSpec:
        if self.labels and self.labels_file is not None:
            raise ValueError("labels_file: give either 'labels' or 'labels_file', not both")
        return self


class BatchingSpec(StrictModel):
    """Batch frames from every pipeline of this model in one shared inference worker."""

    max_size: int = Field(4, ge=1, le=1024, description="frames per batch; at most the model's max batch")
    max_wait_ms: float = Field(5.0, ge=0, le=10000, description="how long a partial batch waits for more frames")


class ModelSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1, max_length=PATH_MAX, description=".pdmodel, .json (PIR) or .onnx")
    params: Optional[str] = Field(None, min_length=1, max_length=PATH_MAX,
                                  description=".pdiparams; required for Paddle models")
    backend: Backend = "paddle"
    target: str = "gpu"
    require_target: bool = False
    precision: Precision = "fp32"
    precision_fallback: bool = False
    inputs: List[InputSpec] = Field(default_factory=list, max_length=64)
    tensorrt: TensorRTOptions = Field(default_factory=TensorRTOptions)
    cpu: CpuOptions = Field(default_factory=CpuOptions)
    memory_optim: bool = True
    calibration: Optional[CalibrationSpec] = None
    validation: Optional[ValidationSpec] = None
    sha256: Dict[str, str] = Field(default_factory=dict, description="expected sha256 per file key (model, params)")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    postprocess: PostprocessSpec = Field(default_factory=PostprocessSpec)
    batching: Optional[BatchingSpec] = None

    @model_validator(mode="before")
    @classmethod
    def _default_resize_rule(cls, data: Any) -> Any:
        """A text model without ``preprocess.resize`` gets PP-OCR's size rule for its type."""
        if not isinstance(data, dict):
            return data
        post = data.get("postprocess")
        kind = post.get("type") if isinstance(post, dict) else getattr(post, "type", None)
        rule = DEFAULT_RESIZE_RULES.get(kind) if isinstance(kind, str) else None
        pre = data.get("preprocess")
        if rule is None:
            return data
        if pre is None:
            return {**data, "preprocess": {"resize_rule": rule}}
        if isinstance(pre, dict) and pre.get("resize") is None and pre.get("resize_rule") is None:
            return {**data, "preprocess": {**pre, "resize_rule": rule}}
        if isinstance(pre, PreprocessSpec) and pre.resize is None and pre.resize_rule is None:
            return {**data, "preprocess": pre.model_copy(update={"resize_rule": rule})}
        return data

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v in ("gpu", "cpu") or _DLA_TARGET.match(v):
            return v
        raise ValueError(f"target must be one of gpu, cpu, dla:0, dla:1, dla:all (got {v!r})")

    @field_validator("sha256")
    @classmethod
    def _hashes(cls, v: Dict[str, str]) -> Dict[str, str]:
        for key, digest in v.items():
            if key not in HASHED_FILES:
                raise ValueError(f"unknown file key {key!r} (allowed: {', '.join(HASHED_FILES)})")
            if not _SHA256.match(digest):
                raise ValueError(f"{key}: expected 64 hex digits (got {digest[:80]!r})")
        return {key: digest.lower() for key, digest in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        suffix = Path(self.model).suffix.lower()
        if suffix not in (".pdmodel", ".json", ".onnx"):
            raise ValueError(f"model: expected a .pdmodel, .json or .onnx file (got {self.model!r})")
        if suffix in (".pdmodel", ".json") and not self.params:
            raise ValueError("params: a Paddle model needs its .pdiparams file")
        if suffix == ".onnx" and self.backend == "paddle":
            raise ValueError("backend: an .onnx model needs backend: tensorrt")
        if self.is_dla and self.precision == "fp32":
            raise ValueError("precision: DLA runs only fp16 or int8; use precision: fp16 or target: gpu")
        if self.calibration is not None and self.precision != "int8" and not self.precision_fallback:
            raise ValueError("calibration: only used with precision: int8")
        if self.tensorrt.use_calib_mode and self.calibration is None:
            raise ValueError("tensorrt.use_calib_mode: true needs 'calibration: {images: ...}'")
        if "params" in self.sha256 and not self.params:
            raise ValueError("sha256: has a 'params' hash but the model has no 'params' file")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"inputs: names must be unique (got {names})")
        if self.batching is not None:
            limit = min([i.shapes()[2][0] for i in self.inputs] + [self.tensorrt.max_batch_size])
            if self.batching.max_size > limit:
                raise ValueError(f"batching.max_size: {self.batching.max_size} exceeds the model's max batch {limit} "
                                 "(tensorrt.max_batch_size and the inputs' max first dimension)")
        return self

    @property
    def is_dla(self) -> bool:
        return self.target.startswith("dla:")

    def dla_cores(self) -> List[int]:
        if not self.is_dla:
            return []
        core = self.target.split(":", 1)[1]
        return [0, 1] if core == "all" else [int(core)]

    @property
    def calib_mode(self) -> bool:
        """What to pass as ``use_calib_mode``: always explicit, never Paddle's binding default."""
        if self.tensorrt.use_calib_mode is not None:
            return self.tensorrt.use_calib_mode
        return self.precision == "int8" and self.calibration is not None

    def precision_chain(self) -> List[str]:
        """Precisions to try in order: the requested one, then fallbacks when allowed."""
        start = PRECISION_ORDER.index(self.precision)
        chain = list(PRECISION_ORDER[start:]) if self.precision_fallback else [self.precision]
        return [p for p in chain if not (self.is_dla and p == "fp32")]


class SourceOptions(StrictModel):
    """Capture options; what a source kind does not use it ignores (documented per kind)."""

    fps: Optional[float] = Field(None, gt=0, le=1000, description="target fps: frames above it are skipped")
    loop: bool = False
    width: Optional[int] = Field(None, ge=1, le=16384)
    height: Optional[int] = Field(None, ge=1, le=16384)
    capture_fps: Optional[int] = Field(None, ge=1, le=1000, description="fps requested from the camera")
    pixel_format: Optional[str] = Field(None, max_length=16)
    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    rotate: Literal[0, 90, 180, 270] = 0
    latency_ms: int = Field(200, ge=0, le=60000)
    transport: Literal["tcp", "udp"] = "tcp"
    decoder: Literal["auto", "hardware", "software"] = "auto"
    max_pixels: int = Field(40_000_000, ge=1, le=1 << 30,
                            description="images: larger ones (by their header) are skipped, never decoded")
    stall_timeout_s: float = Field(10.0, gt=0, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _backoff(self) -> SourceOptions:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s: must not exceed reconnect_max_s ({self.reconnect_min_s} > {self.reconnect_max_s})"
            )
        return self


class QueueSpec(StrictModel):
    size: int = Field(2, ge=1, le=1024)
    policy: Literal["latest", "block"] = "latest"


class PublishSpec(StrictModel):
    qos: Literal[0, 1, 2] = 1
    every_n: int = Field(1, ge=1, le=100000)
    retain: bool = False
    include_empty: bool = True


class CascadeSpec(StrictModel):
    """A model run on every region its parent stage found (DeepStream's secondary inference)."""

    model: str = Field(pattern=NAME_PATTERN)
    labels: List[str] = Field(default_factory=list, description="only regions with one of these labels")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="only regions scoring at least this")
    max_regions: int = Field(64, ge=1, le=4096, description="regions per frame, best first")
    # A direction classifier: its crop goes to the stages below turned 180 degrees when its top
    # class label is ``rotate_label`` with at least ``rotate_score``.
    rotate_label: Optional[str] = Field(None, min_length=1, max_length=256)
    rotate_score: float = Field(0.9, ge=0.0, le=1.0)
    then: List[CascadeSpec] = Field(default_factory=list, max_length=16)

    def models(self) -> List[str]:
        """This stage's model and those of every stage below it."""
        return [self.model] + [m for child in self.then for m in child.models()]


class PipelineSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    source: str = Field(min_length=1, max_length=4096)
    model: str = Field(pattern=NAME_PATTERN)
    options: SourceOptions = Field(default_factory=SourceOptions)
    queue: QueueSpec = Field(default_factory=QueueSpec)
    publish: PublishSpec = Field(default_factory=PublishSpec)
    batch: int = Field(1, ge=1, le=64)
    batch_wait_ms: float = Field(5.0, ge=0, le=10000)
    may_idle: bool = Field(False, description="a fleet update's grace period accepts this pipeline without a result "
                                              "(a source that may legitimately stay quiet)")
    then: List[CascadeSpec] = Field(default_factory=list, max_length=16,
                                    description="models run on each region the pipeline's model found")

    def cascade_models(self) -> List[str]:
        return [m for stage in self.then for m in stage.models()]


class Manifest(StrictModel):
    version: int = Field(1, ge=0, description="increases with every change; fleet updates must raise it")
    models: List[ModelSpec] = Field(min_length=1, max_length=256)
    pipelines: List[PipelineSpec] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models: names must be unique (repeated: {', '.join(dupes)})")
        pnames = [p.name for p in self.pipelines]
        pdupes = sorted({n for n in pnames if pnames.count(n) > 1})
        if pdupes:
            raise ValueError(f"pipelines: names must be unique (repeated: {', '.join(pdupes)})")
        return self

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


PathLike = Union[str, Path]
