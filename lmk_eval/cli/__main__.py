from lmk_eval.cli.commands import main

raise SystemExit(main())
