"""``python -m acepilot ...`` is the ``acepilot`` command."""

from acepilot.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
