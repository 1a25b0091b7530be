from edgeaigc.cli.main import main

raise SystemExit(main())
