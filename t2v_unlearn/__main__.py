"""`python -m t2v_unlearn COMMAND ...` (also `accelerate launch -m t2v_unlearn eval ...`): `t2v-unlearn`."""

import sys

from .commands import main

sys.exit(main())
