"""Shared test settings.

The fixtures are tiny (2 blocks, width 32, T <= 16): for matrices that small one thread is
faster than several, and it keeps the suite's timing steady on a busy 2-core machine.
"""

import torch

torch.set_num_threads(1)
