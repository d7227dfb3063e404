"""When the command began: imported first by `t2v_unlearn.commands`, before the libraries take their time."""

import time

START = time.perf_counter()
