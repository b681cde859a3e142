from meru.cli import main

raise SystemExit(main())
