"""``python -m alchemist.daemon`` is the ``alchemist`` command."""

from alchemist.daemon.cli import main

raise SystemExit(main())
