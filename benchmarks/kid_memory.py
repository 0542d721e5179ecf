"""Peak memory and time of KID at the papers' scale (random features, the metric's own cost only).

    python benchmarks/kid_memory.py [N]        # default N = 10000 generated vs 10000 reference, d = 2048

Prints the peak resident memory added by the call (ru_maxrss delta, MiB) and the seconds it took.
"""

import resource
import sys
import time

import torch

from patronus_diffusion.evaluation.fid import kernel_inception_distance

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
g = torch.Generator().manual_seed(0)
a, b = torch.rand(n, 2048, generator=g), torch.rand(n, 2048, generator=g)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
kid, std = kernel_inception_distance(a, b)
secs = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"KID {n} x {n}, d=2048: {kid:.3e} +- {std:.1e} in {secs:.1f} s; peak RSS {peak / 1024:.0f} MiB "
      f"(inputs {2 * a.numel() * 4 / 2**20:.0f} MiB float32, +{(peak - before) / 1024:.0f} MiB during the call)")
