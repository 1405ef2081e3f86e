"""Fault injection against the real agent: each scenario starts ``python -m agent`` (or a real
``Daemon``), breaks something for real (broker, process, disk, input, signals) and measures.

``edge-agent selftest`` and ``tests/faults/`` run the same scenario functions; docs/reliability.md
records their figures. Scenarios need Mosquitto; some need strace or mount privileges and report
themselves as skipped (with the reason) where those are missing.
"""
