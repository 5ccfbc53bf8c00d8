"""What makes a CPU fine-tune bit-reproducible (docs/REPRODUCE.md says what is and is not, and why).

Called once by finetune() after Lightning's seed_everything (one line in core.py):
- Python, numpy and torch RNGs seeded (again) from the run's `seed`; PYTHONHASHSEED recorded for children;
- torch.use_deterministic_algorithms(True, warn_only=True): deterministic kernels wherever torch has them; an op
  without one warns instead of failing (on GPU some RNNT-loss and scatter kernels have none);
- cuDNN deterministic, benchmark (autotuning: picks kernels by timing) off; CUBLAS_WORKSPACE_CONFIG set so cuBLAS
  reductions are deterministic;
- the loader's workers: none on CPU (fit_to_host); lhotse's sampler and its shard_seed are `seed`
  (build_train_ds: NeMo's default shard_seed "trng" made identical runs differ).

Not covered (documented): a different thread count or CPU model (float reductions split differently), a
different torch/NeMo version, and GPU kernels without deterministic variants.
"""

from __future__ import annotations

import os
import random


def make_deterministic(seed: int) -> dict:
    """Seed everything and switch torch to deterministic kernels; returns what was set (for the log)."""
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "seed": seed,
        "deterministic_algorithms": True,
        "threads": torch.get_num_threads(),
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }
