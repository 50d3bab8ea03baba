"""``python -m bench.realdata``: see ``bench.realdata.run``."""
from bench.realdata.run import main

raise SystemExit(main())
