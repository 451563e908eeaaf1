"""`python -m basegpt ...` runs the same command line as `basegpt ...`."""

from basegpt.cli import main

raise SystemExit(main())
