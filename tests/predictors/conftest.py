"""Fixtures of the predictor tests: the exported test models (tests/support/models.py)."""

from __future__ import annotations

from tests.support.models import onnx_classifier, paddle_models

__all__ = ["onnx_classifier", "paddle_models"]
