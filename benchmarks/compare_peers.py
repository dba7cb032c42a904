"""The peer comparison (see :mod:`kakashi.bench`); ``kakashi bench`` runs the same."""

from kakashi.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
