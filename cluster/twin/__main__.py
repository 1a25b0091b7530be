"""``python -m edgeaigc.cluster.twin``, the same as ``edgeaigc twin``."""

from edgeaigc.cluster.twin.cli import main

raise SystemExit(main())
