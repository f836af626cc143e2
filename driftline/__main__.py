from driftline.cli.main import main

raise SystemExit(main())
