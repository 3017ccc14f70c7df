"""Serving a request that came by another door than NATS (the HTTP front door).

:func:`answer` is :meth:`InferenceService.on_request`'s path without the
transport: the same admission (size and load), validation
(:func:`parse_request`), :meth:`InferenceService.infer`, counts, latency
metric and experience record. Errors are :class:`InferError` s with the
contract's codes; the caller turns them into its own dialect.
"""

from __future__ import annotations

from typing import Any

import structlog

from alchemist.daemon.serving.service import InferenceService, new_request_id
from alchemist.daemon.serving.wire import InferBody, InferError, parse_request

__all__ = ["answer"]

log = structlog.get_logger("alchemist.infer")


async def answer(service: InferenceService, body: InferBody, size: int,
                 hops: int = 0) -> dict[str, Any]:
    """Serve one decoded request of ``size`` bytes; the reply, or :class:`InferError`.

    Binds ``request_id`` in the caller's logging context (call it from a task
    of the request's own, as aiohttp's handlers are).
    """
    service.counts["requests"] += 1
    request_id = new_request_id()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        refusal = service.refusal(size)  # the NATS door's admission rule, shared
        if refusal is not None:
            raise refusal
        service.inflight += 1
        try:
            request = parse_request(body, service.cfg.service.max_deadline_ms)
            reply, exp = await service.infer(request, request_id, hops=hops)
        finally:
            service.inflight -= 1
    except InferError as exc:
        service.counts[f"error_{exc.code}"] += 1
        log.info("infer_error", code=exc.code, message=exc.message)
        raise
    except Exception:
        log.exception("infer_internal_error")
        service.counts["error_internal"] += 1
        raise InferError("internal", f"internal error while serving request {request_id}; "
                         "it is logged under that id") from None
    service.served(reply, exp)
    return reply
