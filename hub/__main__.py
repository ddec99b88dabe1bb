"""``python -m hub``: the ``hub`` command, for subprocesses that must run this interpreter."""

from hub.cli import main

if __name__ == "__main__":
    main()
