"""Simulation pieces: replay providers, a generated fleet, simulated users, reports.

Nothing here is used on the production request path. These modules let the
whole daemon run on one machine without API keys (``alchemist demo``) and let
``alchemist bench replay`` measure fusion and learning against recorded answers:

- :mod:`alchemist.daemon.sim.replay` loads replay sets and serves them over
  OpenAI-compatible HTTP (:class:`~alchemist.daemon.sim.replay.ReplayServer`);
- :mod:`alchemist.daemon.sim.fleet` generates a simulated fleet of providers;
- :mod:`alchemist.daemon.sim.users` turns recorded scores into thumbs up/down;
- :mod:`alchemist.daemon.sim.report` scores what was served against baselines.
"""
