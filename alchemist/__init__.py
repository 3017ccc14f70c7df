"""llm-alchemist: fuse several black-box LLM APIs into one better model.

Everything installs under this one namespace; the repository keeps one top-level
folder per layer and links them here (``alchemist/<layer> -> ../<layer>``)::

    alchemist.schema      (a module here) msgspec conversion; errors name the field
    alchemist.answers     pure answer logic: extraction, fusion, the recipe model
    alchemist.adapters    one module per provider dialect behind one interface
    alchemist.optimizers  fitness, the PyGAD step, the promotion gate, learning policy
    alchemist.probes      probe suites, checkers, the skill router
    alchemist.daemon      the service: serving, learning, storage, runtime, CLI

A layer imports only layers listed above it. ``schema`` imports nothing of ours
and every layer may use it; besides it, ``answers`` and ``adapters`` import no
other layer (and not each other).
"""

__version__ = "0.1.0"
