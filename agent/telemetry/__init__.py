"""What the device reports about itself: the typed health document (health.py), host (psutil), Jetson
sysfs, tegrastats and NVML readers merged by ``HealthCollector`` (collect.py), and the Prometheus
endpoint over the health document (prometheus.py). See docs/telemetry.md.

The composition root builds the collector and the endpoint; the daemon builds one
``HealthDocument`` every health interval with ``system_health()`` under its ``system`` key.
"""
