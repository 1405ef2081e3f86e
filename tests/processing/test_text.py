"""PP-OCR's size rules, the DB text detector and CTC decoding on hand-made tensors (the real models'
runs are in tests/pipeline/test_cascade_ocr.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.engines.contract import TensorInfo
from agent.errors import ManifestError
from agent.manifest.models import ModelSpec, PostprocessSpec, PreprocessSpec
from agent.processing import make_postprocessor
from agent.processing.crops import crop
from agent.processing.geometry import layout
from agent.processing.labels import load_labels
from agent.processing.meta import ImageMeta
from agent.processing.preprocess import Preprocessor, sample_feed

DYNAMIC = [TensorInfo("x", (-1, 3, -1, -1), "float32")]
LINE = [TensorInfo("x", (-1, 3, 48, -1), "float32")]


def test_text_models_get_the_pp_ocr_rule_for_their_type_unless_resize_is_given() -> None:
    def rule(post: str, **pre: object) -> object:
        doc = {"name": "m", "model": "m.pdmodel", "params": "m.pdiparams", "preprocess": pre,
               "postprocess": {"type": post}}
        return ModelSpec.model_validate(doc).preprocess.resize_rule

    assert rule("text_detection") == "limit_side"
    assert rule("text_recognition") == "text_line"
    assert rule("text_recognition", resize=[320, 48]) is None
    assert rule("text_detection", resize_rule="text_line") == "text_line"
    assert rule("classification") is None
    with pytest.raises(ValueError, match="give either a fixed 'resize' or a 'resize_rule'"):
        rule("text_detection", resize=[640, 640], resize_rule="limit_side")


@pytest.mark.parametrize("frame, limit_type, expected", [
    ((384, 191), "min", (1472, 736)),  # short side up to 736, aspect kept, multiples of 32
    ((384, 191), "max", (384, 192)),  # already within 960: only rounded
    ((1920, 1080), "max", (960, 544)),
    ((10, 5), "max", (32, 32)),  # never below one multiple
])
def test_limit_side(frame: tuple, limit_type: str, expected: tuple) -> None:
    spec = PreprocessSpec(resize_rule="limit_side", limit_side_len=736 if limit_type == "min" else 960,
                          limit_type=limit_type)
    out = layout(spec, None, -1, [frame])
    assert out.size == expected and out.zero_pad
    assert (out.placements[0].width, out.placements[0].height) == expected


def test_text_line_batch_is_as_wide_as_its_widest_line_and_pads_with_zero() -> None:
    spec = PreprocessSpec(resize_rule="text_line", mean=[0.5], std=[0.5])
    pre = Preprocessor(spec, LINE)
    short = np.full((20, 40, 3), 255, np.uint8)  # 96 wide at height 48
    long = np.full((10, 100, 3), 255, np.uint8)  # 480 wide
    feeds, metas = pre([short, long])
    assert feeds["x"].shape == (2, 3, 48, 480)
    assert [(m.resized_width, m.pad_x) for m in metas] == [(96, 0), (480, 0)]
    assert np.all(feeds["x"][0, :, :, :96] == 1.0) and np.all(feeds["x"][0, :, :, 96:] == 0.0)
    narrow = pre([short])[0]["x"]
    assert narrow.shape == (1, 3, 48, 320)  # line_min_width
    direction = Preprocessor(PreprocessSpec(resize_rule="text_line", line_min_width=192, line_max_width=192), LINE)
    assert direction([long])[0]["x"].shape == (1, 3, 48, 192)  # squeezed to the classifier's width


def test_sample_feed_is_a_vga_frame_through_the_rule() -> None:
    spec = ModelSpec.model_validate({"name": "rec", "model": "m.pdmodel", "params": "m.pdiparams",
                                     "postprocess": {"type": "text_recognition"}})
    assert sample_feed(spec, LINE)["x"].shape == (1, 3, 48, 320)
    det = spec.model_copy(update={"preprocess": PreprocessSpec(resize_rule="limit_side", limit_side_len=320)})
    assert sample_feed(det, DYNAMIC)["x"].shape == (1, 3, 256, 320)


def meta(w: int, h: int, iw: int, ih: int) -> ImageMeta:
    return ImageMeta(w, h, iw, ih, iw, ih, 0, 0)


def test_db_regions_are_grown_quadrilaterals_in_source_pixels() -> None:
    prob = np.zeros((1, 1, 64, 128), np.float32)
    prob[0, 0, 20:30, 10:90] = 0.9  # one text kernel, 80 x 10 input pixels
    post = make_postprocessor(PostprocessSpec(type="text_detection", unclip_ratio=1.5), DYNAMIC, [])
    (result,) = post({"x": prob}, [meta(256, 128, 128, 64)])  # the source is twice the input size
    assert result["count"] == 1
    (region,) = result["regions"]
    assert region["score"] == pytest.approx(0.9, abs=1e-6)
    # minAreaRect of the pixel outline is 79 x 9; grown by 79*9*1.5 / (2*(79+9)) = 6.06 on each side
    grow = 79 * 9 * 1.5 / (2 * 88)
    x1, y1 = (10 - grow) * 2, (20 - grow) * 2
    x2, y2 = (89 + grow) * 2, (29 + grow) * 2
    np.testing.assert_allclose(region["quad"], [[x1, y1], [x2, y1], [x2, y2], [x1, y2]], atol=0.02)
    assert (region["x1"], region["y2"]) == (pytest.approx(x1, abs=0.02), pytest.approx(y2, abs=0.02))


def test_db_drops_small_and_faint_regions_and_orders_lines() -> None:
    prob = np.zeros((1, 1, 64, 128), np.float32)
    prob[0, 0, 40:50, 70:120] = 0.9  # second line, right
    prob[0, 0, 42:52, 5:60] = 0.9  # second line, left (top 2 px lower: same line)
    prob[0, 0, 5:15, 5:120] = 0.9  # first line
    prob[0, 0, 58:60, 5:40] = 0.9  # 2 px tall: dropped (min_size 3)
    prob[0, 0, 20:30, 5:40] = 0.35  # above mask_threshold but a mean score under 0.5: dropped
    post = make_postprocessor(PostprocessSpec(type="text_detection"), DYNAMIC, [])
    (result,) = post({"x": prob}, [meta(128, 64, 128, 64)])
    lefts = [r["quad"][0][0] for r in result["regions"]]
    tops = [r["quad"][0][1] for r in result["regions"]]
    assert result["count"] == 3 and tops[0] < 10 and lefts[1] < lefts[2]


def test_ctc_greedy_decoding_with_a_space_class(tmp_path: Path) -> None:
    dictionary = tmp_path / "dict.txt"
    dictionary.write_text("a\nb\n \nc\n", encoding="utf-8")  # a space inside the dictionary is a character
    spec = PostprocessSpec(type="text_recognition", labels_file=str(dictionary))
    chars = load_labels(spec)
    assert chars == ["a", "b", " ", "c"]
    post = make_postprocessor(spec, [TensorInfo("y", (-1, -1, 6), "float32")], chars)
    steps = [1, 1, 0, 1, 2, 2, 5, 4, 0, 0]  # a a _ a b b <space> c _ _
    probs = np.full((1, len(steps), 6), 0.02, np.float32)
    for t, k in enumerate(steps):
        probs[0, t, k] = 0.9 if k else 0.5
    (result,) = post({"y": probs}, [meta(10, 10, 10, 10)])
    assert result == {"text": "aab c", "score": pytest.approx(0.9, abs=1e-6)}
    blank = np.zeros((1, 4, 6), np.float32)
    blank[..., 0] = 1.0
    assert post({"y": blank}, [meta(10, 10, 10, 10)]) == [{"text": "", "score": 0.0}]


def test_a_dictionary_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    dictionary = tmp_path / "dict.txt"
    dictionary.write_text("a\nb\n", encoding="utf-8")
    spec = PostprocessSpec(type="text_recognition", labels_file=str(dictionary))
    with pytest.raises(ManifestError, match="the dictionary has 2 characters but output 'y' has 7 classes"):
        make_postprocessor(spec, [TensorInfo("y", (-1, -1, 7), "float32")], load_labels(spec))


def test_paddleocr_inference_yml_is_a_dictionary(tmp_path: Path) -> None:
    yml = tmp_path / "inference.yml"
    yml.write_text("PostProcess:\n  name: CTCLabelDecode\n  character_dict:\n  - '\u3000'\n  - x\n  - '1'\n",
                   encoding="utf-8")
    assert load_labels(PostprocessSpec(type="text_recognition", labels_file=str(yml))) == ["\u3000", "x", "1"]
    yml.write_text("Global: {}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"no PostProcess\.character_dict"):
        load_labels(PostprocessSpec(type="text_recognition", labels_file=str(yml)))


def test_quadrilaterals_are_rectified_upright_and_tall_ones_turned() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:40, 50:150] = 255
    flat = crop(image, {"quad": [[50, 20], [150, 20], [150, 40], [50, 40]], "x1": 50, "y1": 20, "x2": 150, "y2": 40})
    assert flat is not None and flat.shape == (20, 100, 3) and flat.mean() > 250
    tall = crop(image, {"quad": [[0, 0], [20, 0], [20, 60], [0, 60]], "x1": 0, "y1": 0, "x2": 20, "y2": 60})
    assert tall is not None and tall.shape == (20, 60, 3)
    assert crop(image, {"x1": 10.0, "y1": 10.0, "x2": 10.0, "y2": 30.0}) is None
