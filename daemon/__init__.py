"""llm-alchemist: the daemon that fuses several LLM providers into one better model."""

__version__ = "0.1.0"
