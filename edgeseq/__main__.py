from edgeseq.cli import main

raise SystemExit(main())
