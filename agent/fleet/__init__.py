"""Fleet updates: signed manifest envelopes in, verify → validate → build → swap or roll back, state reported.

Modules: ``envelope`` (format and signed bytes), ``keys`` (Ed25519 keys), ``verify`` (hash,
signature, target, replay), ``validate`` (the manifest and model files), ``disk`` (staged manifests, handled
envelopes), ``report`` (the reported document), ``controller`` (``FleetController``),
``publish`` and ``cli`` (``edge-agent fleet keygen|sign|publish``). See docs/fleet.md.
"""

from __future__ import annotations
