"""What the prober has already asked of the golden suites, read back from the journal.

A golden probe is asked once per provider and template (the one the ``default``
recipe gives that provider on the probe's skill). There is no store of its own:
each golden probe record is journaled like any probe record (user ``"probe"``,
ground truth per provider) under a request id that names the probe,
``golden:<suite>/<id>@<digest>:<random>``, where the digest covers the probe's
messages and its check, so an edited example counts as a new one. What was asked
is whatever those records in the experience index say: it survives restarts (the
index is rebuilt from the rated stream) and is shared by every instance following
the stream. A provider that gave no answer has not been asked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

from alchemist.daemon.storage.experience import PROBE_USER, Rated
from alchemist.probes.suites import Probe, render

#: the request id prefix of golden probe records
GOLDEN_PREFIX = "golden:"
#: (probe tag, provider, template name or None): one answer on record
Asked = tuple[str, str, str | None]


def golden_tag(probe: Probe) -> str:
    """``suite/id@digest``: names the probe and what it asks and checks."""
    blob = json.dumps([[m.role, m.content] for m in render(probe)] + [repr(probe.checker)],
                      ensure_ascii=False)
    return f"{probe.key}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def record_id(tag: str) -> str:
    """A fresh request id for a golden record of the probe tagged ``tag``."""
    return f"{GOLDEN_PREFIX}{tag}:{os.urandom(8).hex()}"


def tag_of(request_id: str) -> str | None:
    """The probe tag of a golden record's request id (None: not a golden record)."""
    if not request_id.startswith(GOLDEN_PREFIX):
        return None
    tag, sep, _ = request_id[len(GOLDEN_PREFIX):].rpartition(":")
    return tag if sep and tag else None


def asked(records: Iterable[Rated]) -> set[Asked]:
    """Every (probe tag, provider, template) that some golden record holds an answer for."""
    out: set[Asked] = set()
    for rec in records:
        if rec.user != PROBE_USER or (tag := tag_of(rec.experience.request_id)) is None:
            continue
        exp = rec.experience
        templates = exp.templates or (None,) * len(exp.providers)
        for name, answered, template in zip(exp.providers, exp.answered, templates, strict=False):
            if answered:
                out.add((tag, name, template))
    return out
