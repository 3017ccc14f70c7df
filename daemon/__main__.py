"""``python -m daemon`` is the ``alchemist`` command."""

from daemon.cli import main

raise SystemExit(main())
