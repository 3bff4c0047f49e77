"""`python -m tinylm.cli` (what torchrun and the tests launch): the `tinylm` command."""

from tinylm.cli import main

raise SystemExit(main())
