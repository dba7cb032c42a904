"""The peer comparison (see :mod:`kakashi.cli.bench`); ``kakashi bench`` runs the same."""

from kakashi.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
