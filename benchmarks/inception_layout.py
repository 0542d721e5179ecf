"""Speed of the FID network on the CPU, by memory layout of its input (NCHW against channels-last NHWC).

    OMP_NUM_THREADS=1 python benchmarks/inception_layout.py [N] [REPEATS]   # default 32 images, 2 repeats

Times the TorchScript pool3 network on the same N preprocessed images (299 x 299) in both layouts, alternating,
and prints seconds per image, the ratio within this run, and the largest difference of the features. The
extractor (``InceptionFeatures``) uses channels-last on the CPU because of this measurement.
"""

import sys
import time

import torch

from patronus_diffusion.evaluation.fid import InceptionFeatures, to_inception_input

n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
x = to_inception_input(torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
net = InceptionFeatures(device="cpu").net
layouts = {"NCHW": x.contiguous(), "channels-last": x.contiguous(memory_format=torch.channels_last)}
secs = {name: [] for name in layouts}
feats = {}
with torch.no_grad():
    for inp in layouts.values():
        net(inp[:2])  # warm-up: TorchScript profiling runs
    for _ in range(repeats):
        for name, inp in layouts.items():
            t0 = time.perf_counter()
            feats[name] = net(inp)
            secs[name].append(time.perf_counter() - t0)
best = {name: min(v) for name, v in secs.items()}
for name, s in best.items():
    print(f"{name:>13}: {s / n:.3f} s/image (best of {repeats}, {n} images, {torch.get_num_threads()} threads)")
print(f"speed-up of channels-last: {best['NCHW'] / best['channels-last']:.2f}x; "
      f"largest feature difference {float((feats['NCHW'] - feats['channels-last']).abs().max()):.1e}")
