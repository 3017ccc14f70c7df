"""Telemetry: structured logs (structlog, secrets scrubbed) and Prometheus metrics."""
