"""`python -m kdforge` (what torchrun launches) is the same as the `kdforge` command."""

from kdforge.cli import main

raise SystemExit(main())
