"""``python -m lowdose`` runs the command line."""

from lowdose.cli import main

main()
