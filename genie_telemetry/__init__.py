"""Operational telemetry for genie-worker: traces across the whole path and the gauges
that metrics alone cannot give. Off unless configured (the standard ``OTEL_*``
variables for traces)."""
