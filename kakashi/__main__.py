"""``python -m kakashi``: the same as the ``kakashi`` command."""

from kakashi.cli import main

raise SystemExit(main())
