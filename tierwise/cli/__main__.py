"""``python -m tierwise.cli``: the same command line as the ``tierwise`` console script."""

from tierwise.cli import main

main()
