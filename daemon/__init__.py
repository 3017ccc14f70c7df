"""The service: ``serving`` (one request), ``learning`` (ratings, probes, the evolver),
``storage`` (NATS, streams, the recipe KV, the experience index), ``runtime``
(config, lifecycle, logs, metrics) and the CLI."""
