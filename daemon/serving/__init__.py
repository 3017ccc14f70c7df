"""Serving one request: the wire format, the handler, the fan-out, circuit breakers."""
