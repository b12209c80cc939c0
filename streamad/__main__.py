from streamad.cli import main

raise SystemExit(main())
