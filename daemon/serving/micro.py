"""The NATS micro service, with endpoint stats that measure the work.

nats-py's endpoint times its handler call and counts an error only when the
handler raises. Ours returns at once: a subscription runs its handler for one
message at a time, so the work runs in a task of its own (awaiting it would
serialize requests), and an error is a reply, not an exception. Its numbers
would read about 0 ms and 0 errors. So each endpoint has an
:class:`EndpointMeter`, fed when a request's work ends, and
:class:`MeteredService` reports those numbers in ``$SRV.STATS`` instead (it
overrides :meth:`Service.stats`, the method the STATS verb answers with).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.client import Client
from nats.micro.service import Service, ServiceConfig, ServiceStats

__all__ = ["EndpointMeter", "MeteredService", "add_metered_service"]


@dataclass(slots=True)
class EndpointMeter:
    """Requests, errors and processing time of one endpoint (nanoseconds, like nats.micro)."""

    num_requests: int = 0
    num_errors: int = 0
    processing_time: int = 0
    last_error: str | None = None

    def record(self, started_ns: int, error: str | None = None) -> None:
        """One request done: it started at ``started_ns`` (``time.perf_counter_ns()``);
        ``error`` is what its error reply said (None: a good reply)."""
        self.num_requests += 1
        self.processing_time += time.perf_counter_ns() - started_ns
        if error is not None:
            self.num_errors += 1
            self.last_error = error

    @property
    def average_processing_time(self) -> int:
        """Mean nanoseconds per request (0 before the first)."""
        return self.processing_time // self.num_requests if self.num_requests else 0


class MeteredService(Service):
    """A micro service whose stats come from :class:`EndpointMeter` s, by endpoint name."""

    def __init__(self, client: Client, config: ServiceConfig,
                 meters: Mapping[str, EndpointMeter]) -> None:
        super().__init__(client, config)
        self.meters = dict(meters)

    def stats(self) -> ServiceStats:
        """The service's stats, each metered endpoint's numbers from its meter."""
        stats = super().stats()
        for endpoint in stats.endpoints:
            meter = self.meters.get(endpoint.name)
            if meter is not None:
                endpoint.num_requests = meter.num_requests
                endpoint.num_errors = meter.num_errors
                endpoint.last_error = meter.last_error
                endpoint.processing_time = meter.processing_time
                endpoint.average_processing_time = meter.average_processing_time
        return stats


async def add_metered_service(client: Client, config: ServiceConfig,
                              meters: Mapping[str, EndpointMeter]) -> MeteredService:
    """Start a :class:`MeteredService`, as ``nats.micro.add_service`` starts a plain one."""
    service = MeteredService(client, config, meters)
    await service.start()
    return service
