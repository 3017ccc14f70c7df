"""KV buckets the daemon creates besides the recipes': opened if they exist, else created
with the configured replica count (``nats.replicas``)."""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

__all__ = ["open_kv"]

log = structlog.get_logger("alchemist.nats")


async def open_kv(js: JetStreamContext, bucket: str, *, replicas: int, description: str,
                  ttl: float | None = None) -> KeyValue:
    """The bucket ``bucket`` (one value per key), created if missing. An existing bucket
    keeps its settings, but a TTL other than ``ttl`` is brought to it (a limit that follows
    the config, as the streams' do)."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, history=1, replicas=replicas, ttl=ttl,
                                         description=description)
    info = await js.stream_info(f"KV_{bucket}")
    config = info.config
    if ttl is not None and config.max_age != ttl:
        config.max_age = ttl
        await js.update_stream(config)
    if config.num_replicas != replicas:
        log.warning("bucket_replicas_differ", bucket=bucket, replicas=config.num_replicas,
                    configured=replicas)
    return kv
