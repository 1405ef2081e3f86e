"""Generated hostile inputs for the daemon's acceptance path (issue 10's adversarial suite, part 1).

Seeded (``derandomize``): every run tries the same few thousand cases. Properties: envelopes go through
the fleet controller's own steps (parse → verify → target → replay → stage) and end in an ``AgentError``
or a loaded manifest, never another exception; source strings end in a ``SourceError`` or a parsed source;
preprocess settings against model inputs end in an ``AgentError`` or a working ``Preprocessor``.
tests/manifest/test_fuzz.py generates manifests and configs for the loaders the same way.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.engines.contract import TensorInfo
from agent.errors import AgentError
from agent.fleet.disk import StagedManifests
from agent.fleet.envelope import parse_envelope
from agent.fleet.keys import load_public_keys
from agent.fleet.validate import stage_manifest
from agent.fleet.verify import TrustPolicy, check_newer, check_target, verify_envelope
from agent.manifest.models import PreprocessSpec
from agent.processing.preprocess import Preprocessor
from agent.sources.uri import parse_uri
from tests.fleet.helpers import Signer, manifest_text, write_model_files

SEEDED = settings(database=None, derandomize=True, deadline=timedelta(seconds=5),
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["schema", "version", "sha256", "manifest", "signature", "key_id", "target", "models"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("generated")
    write_model_files(root / "models")
    signer = Signer()
    return root, signer, TrustPolicy(load_public_keys([signer.public]), True)


def accept(payload: bytes, root: Path, trust: TrustPolicy) -> None:
    """The controller's steps for one desired message, in its order."""
    envelope = parse_envelope(payload)
    verify_envelope(envelope, trust)
    check_target(envelope, "dev1", ["lab"])
    check_newer(envelope, 1)
    stage_manifest(envelope, StagedManifests(root / "state"), [root / "models"])


@settings(SEEDED, max_examples=1500)
@given(field=st.sampled_from(FIELDS), value=JSON, version=st.integers(2, 5))
def test_mutated_signed_envelopes_end_in_an_agent_error_or_a_staged_manifest(
        site: Any, field: str, value: Any, version: int) -> None:
    root, signer, trust = site
    doc = json.loads(signer.envelope(manifest_text(version), version))
    doc[field] = value
    try:
        accept(json.dumps(doc).encode(), root, trust)
    except AgentError:
        pass


@settings(SEEDED, max_examples=500)
@given(data=st.binary(max_size=400))
def test_random_payloads_end_in_an_agent_error(site: Any, data: bytes) -> None:
    root, _, trust = site
    with pytest.raises(AgentError):
        accept(data, root, trust)


SCHEMES = ["", "file://", "rtsp://", "rtsps://", "http://", "https://", "csi://", "v4l2://", "gopher://", "x+y://"]


@settings(SEEDED, max_examples=2000)
@given(scheme=st.sampled_from(SCHEMES), rest=st.text(max_size=60), gst=st.booleans())
def test_generated_sources_end_in_a_source_error_or_a_parsed_source(
        tmp_path_factory: pytest.TempPathFactory, scheme: str, rest: str, gst: bool) -> None:
    text = f"{scheme}{rest}" + (" ! appsink" if gst and rest else "")
    try:
        parse_uri(text, Path("/nonexistent-base"))
    except AgentError:
        pass


@settings(SEEDED, max_examples=800)
@given(color=st.sampled_from(["rgb", "bgr", "gray"]), layout=st.sampled_from(["nchw", "nhwc"]),
       dtype=st.sampled_from(["float32", "float16", "uint8"]), model_dtype=st.sampled_from(["float32", "uint8"]),
       name=st.sampled_from([None, "x", "nosuch"]),
       dims=st.lists(st.sampled_from([-1, 1, 2, 3, 4, 8, 64]), min_size=0, max_size=5),
       resize=st.one_of(st.none(), st.tuples(st.integers(1, 96), st.integers(1, 96))),
       frame=st.tuples(st.integers(1, 80), st.integers(1, 80)))
def test_generated_preprocess_settings_against_model_inputs_end_in_an_agent_error_or_work(
        color: str, layout: str, dtype: str, model_dtype: str, name: Any, dims: Any, resize: Any, frame: Any) -> None:
    extra = {"scale": 1.0, "mean": [0.0], "std": [1.0]} if dtype != "uint8" else {}
    try:
        spec = PreprocessSpec(color=color, layout=layout, dtype=dtype, input=name, resize=resize, **extra)
    except ValidationError:
        return  # refused by the schema, naming the field
    try:
        pre = Preprocessor(spec, [TensorInfo("x", tuple(dims), model_dtype)])
        pre([np.zeros((frame[1], frame[0], 3), np.uint8)])
    except AgentError:
        pass
