"""Runtime: the daemon lifecycle (start, reload, drain, stop) and systemd notify."""
