"""What the evolver carries between steps for one recipe, and its file.

Per recipe, ``<state>/evolver/<recipe>.npz`` holds the population with the
stream position it learned up to (and whether the recipe was calibrated), so a
restart resumes them. A population for other providers is dropped: its genes
mean something else now. The same bytes (:func:`dump_state`, :func:`parse_state`)
are shared through a KV bucket, so whichever instance next holds a recipe's
evolver lease resumes where the last holder stopped (:mod:`.leadership`).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from alchemist.answers.recipes import FALLBACK

__all__ = ["State", "dump_state", "load_state", "parse_state", "save_state"]

log = structlog.get_logger("alchemist.evolver")


@dataclass(slots=True)
class State:
    """What the evolver carries between steps for one recipe."""

    skills: tuple[str, ...] = (FALLBACK,)
    #: the providers the population's genes are for
    providers: tuple[str, ...] = ()
    population: np.ndarray | None = None
    fitness: np.ndarray | None = None
    #: the stream position (in evidence records) the last step started learns up to
    seen: int = 0
    #: ... and the one the last finished step (promotion included) learned up to
    done: int = 0
    #: the evidence count at the last check, and when it last changed (``interval_s``)
    total: int = 0
    changed: float = field(default_factory=time.monotonic)
    generation: int = 0
    seeds: np.random.SeedSequence = field(default_factory=np.random.SeedSequence)
    #: the template catalog the template genes were built from (JSON; "" for none)
    layout: str = ""
    #: whether the recipe was calibrated (``evolver.calibrate``: once per recipe)
    calibrated: bool = False


def dump_state(st: State) -> bytes | None:
    """A recipe's state as bytes (an ``.npz``); None before its first population."""
    if st.population is None:
        return None
    out = io.BytesIO()
    np.savez(out, population=st.population, skills=np.asarray(st.skills),
             providers=np.asarray(st.providers), generation=st.generation,
             layout=np.asarray(st.layout), seen=st.done, calibrated=st.calibrated)
    return out.getvalue()


def save_state(folder: Path, name: str, st: State) -> None:
    """Write a recipe's state atomically (nothing to save before its first population)."""
    data = dump_state(st)
    if data is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp.npz"
    tmp.write_bytes(data)
    os.replace(tmp, folder / f"{name}.npz")


def load_state(folder: Path, name: str, providers: tuple[str, ...]) -> State:
    """A recipe's saved state; its population only if it was for these ``providers``."""
    path = folder / f"{name}.npz"
    if not path.exists():
        return State()
    try:
        return parse_state(path.read_bytes(), name, providers)
    except OSError as exc:
        log.warning("evolver_state_unreadable", recipe=name, error=type(exc).__name__)
        return State()


def parse_state(data: bytes, name: str, providers: tuple[str, ...]) -> State:
    """A recipe's state from :func:`dump_state`'s bytes (an empty one if unreadable)."""
    st = State()
    try:
        with np.load(io.BytesIO(data)) as z:
            # where the finished steps got to in the stream: the next step is the next
            # boundary's, whatever the providers
            st.seen = st.done = int(z["seen"]) if "seen" in z else 0
            st.calibrated = bool(z["calibrated"]) if "calibrated" in z else False
            if tuple(z["providers"].tolist()) == providers:
                st.population = z["population"].astype(np.float64)
                st.providers = providers
                st.skills = tuple(z["skills"].tolist())
                st.generation = int(z["generation"])
                st.layout = str(z["layout"]) if "layout" in z else ""
                log.info("evolver_resumed", recipe=name, generation=st.generation,
                         population=len(st.population), seen=st.seen)
    except (OSError, KeyError, ValueError, EOFError) as exc:
        log.warning("evolver_state_unreadable", recipe=name, error=type(exc).__name__)
    return st
