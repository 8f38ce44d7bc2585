from petalnet.cli import main

raise SystemExit(main())
