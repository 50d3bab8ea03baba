"""``python -m runtime``: the stepwise command line."""
from runtime.cli import main

main()
