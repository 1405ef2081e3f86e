"""Frames (H x W x 3 uint8 BGR) → the model's input tensors, in two passes per image, reusing buffers.

Pass 1, geometry (uint8): ``cv2.resize`` (INTER_LINEAR) writes straight into an input-sized canvas,
or, with ``keep_aspect``, into the centred region of a letterbox canvas whose border is filled with
``pad_value`` only when the placement changes. A frame that already has the input size is read in
place (no pass at all).

Pass 2, values: colour order, scale/mean/std, dtype and layout in one table lookup per pixel
(``cv2.LUT``). The normalisation is the multiply-add ``x * a + b`` with per-channel
``a = scale / std`` and ``b = -mean / std``; as pixels are uint8 it takes only 256 values per
channel, so the table holds exactly the float32 results of that multiply-add. NCHW: each model
channel is taken from its BGR channel with ``cv2.extractChannel`` (the RGB swap is just which one)
and looked up straight into its plane of the batch tensor, so the transposition costs nothing.
NHWC: ``cvtColor`` BGR→RGB when needed, then one lookup into the batch tensor. Gray: ``cvtColor``
BGR→GRAY, then one lookup. float16 looks up into a float32 scratch and casts (OpenCV 4.x, as on
JetPack, has no float16 tables).

``mean``/``std`` are in the model's channel order (R, G, B for ``color: rgb``), in units of the
scaled pixel: ``(pixel * scale - mean) / std``. ``dtype: uint8`` feeds the raw pixel values:
scale/mean/std do not apply and setting them is an error.

Letterbox (``keep_aspect``): scale ``s = min(W / w, H / h)``; the content is
``round(w * s) x round(h * s)`` (half up), placed CENTRED with the left/top padding
``((W - nw) // 2, (H - nh) // 2)``. ``ImageMeta`` records the placement so post-processing maps
results back to source pixels.

Extra inputs (PaddleDetection): ``im_shape`` = ``[resized_h, resized_w]`` (the content size before
padding), ``scale_factor`` = ``[resized_h / h, resized_w / w]``, one float32 row per image.

Verified here on CPU with OpenCV 5 (the dev venv); on Jetson the same calls run against JetPack's
OpenCV 4.x, which was not available to test.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import BuildError, ConfigError, ManifestError, SourceError
from agent.logs import event
from agent.manifest.models import ModelSpec, PathLike, PreprocessSpec
from agent.processing.geometry import Placement, layout
from agent.processing.meta import ImageMeta

log = logging.getLogger(__name__)

_RGB_FROM_BGR = (2, 1, 0)
_BGR_FROM_BGR = (0, 1, 2)
# Output buffers kept per batch shape: a pipeline alternates between its full batch and a short
# one at the end of a file; more shapes only occur with dynamic input sizes, where old ones go.
_KEEP_SHAPES = 4


class Preprocessor:
    """``__call__(images) -> (feeds, metas)`` for one model input (plus its extra inputs).

    With ``reuse_buffers`` (the default) the returned arrays are the SAME objects on every call
    with the same batch shape: the caller must consume them (run inference) before the next call,
    and must not keep them. One instance per thread: it is not thread-safe.
    """

    def __init__(self, spec: PreprocessSpec, inputs: Sequence[TensorInfo], reuse_buffers: bool = True) -> None:
        self.spec = spec
        info = _image_input(spec, inputs)
        self.input_name = info.name
        self._channels = 1 if spec.color == "gray" else 3
        _check_channels(spec, info, self._channels)
        if info.dtype != spec.dtype:
            raise ManifestError(
                f"preprocess.dtype: the model input '{info.name}' takes {info.dtype} but preprocess.dtype is "
                f"{spec.dtype}; set preprocess.dtype: {info.dtype}"
            )
        self.input_size = _input_size(spec, info)  # (width, height); None: by the resize rule or the frame
        self._model_height = info.shape[2] if spec.layout == "nchw" else info.shape[1]
        self.fixed_batch = info.shape[0] if info.shape[0] > 0 else None
        self._extra = _extra_inputs(spec, inputs, info.name)
        self._scale_factor_fed = "scale_factor" in self._extra.values()
        self._sources = _RGB_FROM_BGR if spec.color == "rgb" else _BGR_FROM_BGR
        self._tables = _tables(spec, self._channels)
        self._via_f32 = spec.dtype == "float16"
        self._reuse = reuse_buffers
        self._batches: Dict[Tuple[int, ...], Dict[str, np.ndarray]] = {}
        self._work: Dict[str, np.ndarray] = {}
        self._border: Optional[Tuple[int, ...]] = None  # the letterbox placement the canvas border was filled for

    def __call__(self, images: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[ImageMeta]]:
        if not images:
            raise ValueError("Preprocessor needs at least one image")
        n = len(images)
        if self.fixed_batch is not None and n != self.fixed_batch:
            raise ConfigError(
                f"the model input '{self.input_name}' takes batches of exactly {self.fixed_batch} but got {n} "
                f"frames; set the pipeline's batch to {self.fixed_batch} or export the model with a dynamic batch"
            )
        sizes = [_frame_size(i, image) for i, image in enumerate(images)]
        plan = layout(self.spec, self.input_size, self._model_height, sizes)
        feeds = self._buffers(n, plan.size)
        tensor = feeds[self.input_name]
        metas = []
        for i, (image, placement) in enumerate(zip(images, plan.placements)):
            placed, meta = self._place(image, plan.size, placement)
            self._write(placed, tensor[i])
            if plan.zero_pad:
                _zero_padding(tensor[i], placement, self.spec.layout)
            metas.append(meta)
        for name, kind in self._extra.items():
            rows = feeds[name]
            for i, meta in enumerate(metas):
                if kind == "im_shape":
                    rows[i] = (meta.resized_height, meta.resized_width)
                else:
                    rows[i] = (meta.scale_y, meta.scale_x)
        return dict(feeds), metas

    def warmup_frame(self) -> Optional[np.ndarray]:
        """A mid-grey frame of the model's input size (a VGA frame for the PP-OCR size rules), for the
        warm-up; None when the size is each frame's own."""
        if self.input_size is None and self.spec.resize_rule is None:
            return None
        width, height = self.input_size or SAMPLE_FRAME_SIZE
        return np.full((height, width, 3), 128, np.uint8)

    def _place(self, image: np.ndarray, size: Tuple[int, int], at: Placement) -> Tuple[np.ndarray, ImageMeta]:
        """Pass 1: the frame at the input size, uint8 BGR, and where its content lies."""
        h0, w0 = image.shape[:2]
        width, height = size
        nw, nh, px, py = at.width, at.height, at.x, at.y
        meta = ImageMeta(w0, h0, width, height, nw, nh, px, py, self._scale_factor_fed)
        if (w0, h0) == (width, height) and (nw, nh) == (width, height):
            return image, meta
        canvas = self._scratch("canvas", (height, width, 3), np.uint8)
        if (nw, nh) == (width, height):
            cv2.resize(image, (width, height), dst=canvas, interpolation=cv2.INTER_LINEAR)
            self._border = None  # the border was painted over: the next letterbox must draw it again
            return canvas, meta
        placement = (width, height, nw, nh, px, py)
        if self._border != placement:
            canvas[...] = self.spec.pad_value
            self._border = placement
        cv2.resize(image, (nw, nh), dst=canvas[py:py + nh, px:px + nw], interpolation=cv2.INTER_LINEAR)
        return canvas, meta

    def _write(self, image: np.ndarray, out: np.ndarray) -> None:
        """Pass 2: ``image`` (input-sized uint8 BGR) into ``out``, this image's slot of the batch."""
        h, w = image.shape[:2]
        if self._channels == 1:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=self._scratch("gray", (h, w), np.uint8))
            self._lookup(gray, self._tables[0], out.reshape(h, w))
        elif self.spec.layout == "nchw":
            plane = self._scratch("plane", (h, w), np.uint8)
            for c, (source, table) in enumerate(zip(self._sources, self._tables)):
                cv2.extractChannel(image, source, dst=plane)
                self._lookup(plane, table, out[c])
        else:
            if self.spec.color == "rgb":
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=self._scratch("rgb", (h, w, 3), np.uint8))
            self._lookup(image, self._tables[0], out)

    def _lookup(self, src: np.ndarray, table: np.ndarray, dst: np.ndarray) -> None:
        if self._via_f32:
            tmp = self._scratch("f32", src.shape, np.float32)
            cv2.LUT(src, table, dst=tmp)
            np.copyto(dst, tmp)
        else:
            cv2.LUT(src, table, dst=dst)

    def _scratch(self, key: str, shape: Tuple[int, ...], dtype: type) -> np.ndarray:
        buf = self._work.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._work[key] = np.empty(shape, dtype)
            if key == "canvas":
                self._border = None
        return buf

    def _buffers(self, n: int, size: Tuple[int, int]) -> Dict[str, np.ndarray]:
        width, height = size
        c = self._channels
        shape = (n, c, height, width) if self.spec.layout == "nchw" else (n, height, width, c)
        if not self._reuse:
            return self._allocate(shape)
        bufs = self._batches.get(shape)
        if bufs is None:
            if len(self._batches) >= _KEEP_SHAPES:
                del self._batches[next(iter(self._batches))]
            bufs = self._batches[shape] = self._allocate(shape)
            event(log, logging.DEBUG, "preprocess.buffers", input=self.input_name, shape=list(shape))
        return bufs

    def _allocate(self, shape: Tuple[int, ...]) -> Dict[str, np.ndarray]:
        bufs = {self.input_name: np.empty(shape, np.dtype(self.spec.dtype))}
        for name in self._extra:
            bufs[name] = np.empty((shape[0], 2), np.float32)
        return bufs


def calibration_feeds(
    spec: ModelSpec, inputs: Sequence[TensorInfo], files: Sequence[PathLike]
) -> Iterator[Dict[str, np.ndarray]]:
    """Image files through the model's own preprocessing, in batches of ``calibration.batch_size``
    (1 without a calibration section); the last batch may be shorter. The one path for INT8
    calibration and the accuracy gate's golden images. Every batch has fresh arrays, so callers may
    keep them."""
    batch_size = spec.calibration.batch_size if spec.calibration is not None else 1
    pre = Preprocessor(spec.preprocess, inputs, reuse_buffers=False)
    for start in range(0, len(files), batch_size):
        images = [_read_image(spec.name, path) for path in files[start:start + batch_size]]
        feeds, _ = pre(images)
        yield feeds


# The frame a build warms a model up on when the manifest declares no input shapes: VGA, as most
# cameras deliver, so the preprocessing's size rules give the shape a real frame would get.
SAMPLE_FRAME_SIZE = (640, 480)


def sample_feed(spec: ModelSpec, inputs: Sequence[TensorInfo]) -> Dict[str, np.ndarray]:
    """One synthetic frame (seeded noise) through the model's own preprocessing: every input the
    model needs, shaped as inference will shape it. ``ManifestError`` when the preprocessing does
    not fit the model's inputs (the same error the pipeline would raise)."""
    width, height = SAMPLE_FRAME_SIZE
    frame = np.random.RandomState(0).randint(0, 256, (height, width, 3)).astype(np.uint8)
    pre = Preprocessor(spec.preprocess, inputs, reuse_buffers=False)
    feeds, _ = pre([frame] * (pre.fixed_batch or 1))
    return feeds


def _read_image(model: str, path: PathLike) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError(
            f"model '{model}': cannot read image {path} (missing, unreadable or not a format OpenCV decodes); "
            "replace or remove it"
        )
    return np.asarray(image)


def _image_input(spec: PreprocessSpec, inputs: Sequence[TensorInfo]) -> TensorInfo:
    names = [i.name for i in inputs]
    wanted = spec.input if spec.input is not None else (names[0] if names else None)
    for info in inputs:
        if info.name == wanted:
            if len(info.shape) != 4:
                raise ManifestError(
                    f"preprocess: the model input '{info.name}' has shape {list(info.shape)}, not an image batch "
                    f"(4 dimensions, {spec.layout}); set preprocess.input to the image input"
                )
            return info
    raise ManifestError(
        f"preprocess.input: the model has no input {wanted!r} (its inputs: {names}); set preprocess.input to the "
        "image input"
    )


def _check_channels(spec: PreprocessSpec, info: TensorInfo, channels: int) -> None:
    dims = {"nchw": info.shape[1], "nhwc": info.shape[3]}
    found = dims[spec.layout]
    if found < 1 or found == channels:
        return
    other = "nhwc" if spec.layout == "nchw" else "nchw"
    hint = f"set preprocess.layout: {other}" if dims[other] == channels else "check preprocess.color and layout"
    raise ManifestError(
        f"preprocess: the model input '{info.name}' (shape {list(info.shape)}) has {found} channels in "
        f"{spec.layout} layout but color '{spec.color}' gives {channels}; {hint}"
    )


def _input_size(spec: PreprocessSpec, info: TensorInfo) -> Optional[Tuple[int, int]]:
    h, w = (info.shape[2], info.shape[3]) if spec.layout == "nchw" else (info.shape[1], info.shape[2])
    if spec.resize is not None:
        rw, rh = spec.resize
        if (w > 0 and w != rw) or (h > 0 and h != rh):
            raise ManifestError(
                f"preprocess.resize: [{rw}, {rh}] does not fit the model input '{info.name}' (shape "
                f"{list(info.shape)}, {spec.layout}); set resize: [{w if w > 0 else rw}, {h if h > 0 else rh}]"
            )
        return rw, rh
    if w > 0 and h > 0:
        return w, h
    if (w > 0 or h > 0) and spec.resize_rule is None:
        raise ManifestError(
            f"preprocess.resize: the model input '{info.name}' (shape {list(info.shape)}) fixes only one of "
            "height and width; set preprocess.resize: [width, height]"
        )
    return None


def _extra_inputs(spec: PreprocessSpec, inputs: Sequence[TensorInfo], image: str) -> Dict[str, str]:
    names = [i.name for i in inputs]
    for name in spec.extra_inputs:
        if name not in names or name == image:
            raise ManifestError(
                f"preprocess.extra_inputs: {name!r} is not a non-image input of the model (its inputs: {names})"
            )
    unfed = [n for n in names if n != image and n not in spec.extra_inputs]
    if unfed:
        raise ManifestError(
            f"preprocess.extra_inputs: the model inputs {unfed} would get no data; map each to im_shape or "
            f"scale_factor (e.g. extra_inputs: {{{unfed[0]}: scale_factor}}) or set preprocess.input"
        )
    return dict(spec.extra_inputs)


def _tables(spec: PreprocessSpec, channels: int) -> List[np.ndarray]:
    """The lookup tables of pass 2, shaped as ``cv2.LUT`` wants them for the layout."""
    if spec.dtype == "uint8":
        _check_raw_pixels(spec)
        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
    else:
        mean = _per_channel(spec, "mean", spec.mean, channels)
        std = _per_channel(spec, "std", spec.std, channels)
        a = (np.float32(spec.scale) / std).astype(np.float32)
        b = (-mean / std).astype(np.float32)
        values = np.arange(256, dtype=np.float32)[:, None] * a + b
    if channels == 3 and spec.layout == "nhwc":
        return [np.ascontiguousarray(values.reshape(1, 256, 3))]
    return [np.ascontiguousarray(values[:, c].reshape(1, 256)) for c in range(channels)]


def _per_channel(spec: PreprocessSpec, field: str, values: Sequence[float], channels: int) -> np.ndarray:
    """The schema allows 1 or 3 values; gray has one channel, so three must agree."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.size == channels:
        return arr
    if np.all(arr == arr[0]):
        return np.full(channels, arr[0], dtype=np.float32)
    raise ManifestError(
        f"preprocess.{field}: {arr.size} different values for color '{spec.color}', which has {channels} channel; "
        "give one value"
    )


def _check_raw_pixels(spec: PreprocessSpec) -> None:
    given = spec.model_fields_set
    changed = (
        ("scale" in given and spec.scale != 1.0)
        or ("mean" in given and any(m != 0.0 for m in spec.mean))
        or ("std" in given and any(s != 1.0 for s in spec.std))
    )
    if changed:
        raise ManifestError(
            "preprocess.dtype: uint8 feeds raw pixel values, so scale/mean/std cannot apply; remove them "
            "or use dtype: float32"
        )


def _frame_size(index: int, image: np.ndarray) -> Tuple[int, int]:
    _check_frame(index, image)
    return int(image.shape[1]), int(image.shape[0])


def _zero_padding(out: np.ndarray, at: Placement, layout_name: str) -> None:
    """PP-OCR pads with zeros after normalisation: clear what lies outside the content."""
    planes = out if layout_name == "nchw" else np.moveaxis(out, -1, 0)
    planes[:, at.y + at.height:, :] = 0
    planes[:, :, at.x + at.width:] = 0
    planes[:, :at.y, :] = 0
    planes[:, :, :at.x] = 0


def _check_frame(index: int, image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SourceError(
            f"frame {index} of the batch has shape {image.shape} and dtype {image.dtype}; sources must deliver "
            "H x W x 3 uint8 BGR images"
        )
