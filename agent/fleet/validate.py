"""The ``validating`` step: the manifest an envelope carries, and the model files it lists.

The manifest is loaded like any other, but with every path confined to the allowed model
directories and relative paths resolved against the first of them. Listed model files must
be inside those directories and end up on the device with the signed hash: files with a
``url`` are fetched first (agent/fleet/artifacts.py), before the manifest is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from agent.errors import FleetError
from agent.fleet.disk import StagedManifests
from agent.fleet.envelope import Envelope, ModelFile
from agent.hashing import sha256_file
from agent.manifest.load import LoadedManifest, parse_manifest
from agent.manifest.paths import absolute, inside

# (models, version, base_dir, allowed_dirs): fetches the files with a url that are missing or differ.
FetchFn = Callable[[Sequence[ModelFile], int, Path, Sequence[Path]], object]


def stage_manifest(envelope: Envelope, staged: StagedManifests, allowed_dirs: Sequence[Path],
                   fetch: Optional[FetchFn] = None) -> LoadedManifest:
    """The envelope's manifest, loaded and written to ``staged`` once everything about it checks out.
    ``fetch`` runs first, so the loader finds downloaded model files in place.

    Raises ``InvalidManifestError`` (one line per problem) or ``FleetError``.
    """
    data = envelope.manifest_bytes()
    base = allowed_dirs[0]
    if fetch is not None:
        fetch(envelope.models, envelope.version, base, allowed_dirs)
    loaded = parse_manifest(data, staged.path_for(envelope.version), allowed_dirs, base_dir=base)
    if loaded.manifest.version != envelope.version:
        raise FleetError(f"version mismatch: the envelope says {envelope.version}, the manifest says "
                         f"{loaded.manifest.version}; set 'version: {envelope.version}' in the manifest and "
                         "sign it again")
    check_model_files(envelope.models, base, allowed_dirs)
    staged.write(envelope.version, data)
    return loaded


def check_model_files(models: Sequence[ModelFile], base_dir: Path, allowed_dirs: Sequence[Path]) -> None:
    """Every problem at once, one line each; a path outside ``allowed_dirs`` is never opened."""
    problems: List[str] = []
    for i, model in enumerate(models):
        problem = _check(model, base_dir, allowed_dirs)
        if problem is not None:
            problems.append(f"models[{i}] {model.path}: {problem}")
    if problems:
        raise FleetError("\n".join(problems))


def _check(model: ModelFile, base_dir: Path, allowed_dirs: Sequence[Path]) -> str | None:
    if "\x00" in model.path:
        return "path contains a NUL character"
    path = absolute(model.path, base_dir)
    if not inside(path, allowed_dirs):
        allowed = ", ".join(str(d) for d in allowed_dirs) or "none"
        return (f"path escapes the allowed model directories (resolves to {os.path.realpath(path)}; allowed: "
                f"{allowed}); use a path inside them")
    if not os.path.isfile(path):
        return f"not on the device ({path}): copy the file there, then publish again"
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if actual != model.sha256:
        return (f"sha256 mismatch: the envelope expects {model.sha256}, {path} has {actual}; "
                "copy the right file or sign the envelope again")
    return None


# Elements that read or write files, sockets or shared memory: a fleet update could use them to read
# /etc/shadow into results or write anywhere the agent can. Refused in fleet updates even with
# fleet.allow_gstreamer; camera, decode and convert elements are what a raw pipeline needs.
IO_ELEMENTS = frozenset({
    "filesrc", "filesink", "multifilesrc", "multifilesink", "splitfilesrc", "splitmuxsrc", "splitmuxsink",
    "giosrc", "giosink", "giostreamsrc", "giostreamsink", "fdsrc", "fdsink", "appsrc",
    "tcpclientsrc", "tcpclientsink", "tcpserversrc", "tcpserversink", "multisocketsink", "socketsrc",
    "udpsrc", "udpsink", "multiudpsink", "dynudpsink", "shmsrc", "shmsink", "unixfdsrc", "unixfdsink",
    "souphttpsrc", "souphttpclientsink", "curlhttpsrc", "curlfilesink", "curlftpsink", "curlsmtpsink",
    "hlssink", "hlssink2", "hlssink3", "dashsink", "rtmpsink", "rtmp2sink", "srtsink", "srtsrc",
})


def check_fleet_sources(loaded: LoadedManifest, allow_gstreamer: bool) -> None:
    """Raw GStreamer pipelines in a fleet manifest: refused unless ``fleet.allow_gstreamer``, and even then
    refused when an element reads or writes files or sockets (``IO_ELEMENTS``)."""
    for j, pspec in enumerate(loaded.manifest.pipelines):
        if " ! " not in pspec.source:
            continue
        where = f"pipelines[{j}].source"
        if not allow_gstreamer:
            raise FleetError(f"{where}: raw GStreamer pipelines are refused in fleet updates; use a URI "
                             "(rtsp://, csi://, v4l2://, a file) or set fleet.allow_gstreamer: true in config.yaml")
        for element in pspec.source.split("!"):
            words = element.split()
            name = words[0] if words else ""
            if name in IO_ELEMENTS:
                raise FleetError(f"{where}: GStreamer element '{name}' reads or writes files or sockets and is "
                                 "refused in fleet updates; use a source URI instead")
