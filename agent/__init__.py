"""jetson-edge-agent: deploy Paddle/TensorRT models to Jetson fleets over MQTT."""

from __future__ import annotations

__version__ = "0.1.0"
