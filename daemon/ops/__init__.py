"""CLI verbs beyond the core ones (``alchemist probe``, ``alchemist status``)."""
