"""``python -m stepwise_cli``: the stepwise command line."""
from stepwise_cli.main import main

main()
