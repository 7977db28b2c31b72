"""`python -m producers.cli` runs the `lmq` command line."""

from producers.cli import main

main()
