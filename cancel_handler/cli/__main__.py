"""``python -m cancel_handler.cli``: the same as the ``dli-cancel`` console script."""

from cancel_handler.cli import main

raise SystemExit(main())
