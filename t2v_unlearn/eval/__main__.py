"""`python -m t2v_unlearn.eval ...` (also `accelerate launch -m t2v_unlearn.eval ...`): the `eval` command."""

import sys

from .cli import main

sys.exit(main())
