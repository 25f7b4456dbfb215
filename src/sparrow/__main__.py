from sparrow.cli import main

raise SystemExit(main())
