"""The ``stepwise`` command line: one thin click module per command (``stepwise_cli.main``)."""
