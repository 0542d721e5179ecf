"""Store every prototype's nearest training patches beside a model's weights, so that the explorer shows them
without the dataset (``analysis.explain.stored_patches``; the shipped model's ``prototype_patches.safetensors``).

    python scripts/make_prototype_patches.py src/patronus_diffusion/pretrained/fashion-mnist \
        --data-root /usr/share/datasets/fashion-mnist [--k 5 --n-images 10000 --seed 0 --split train]

The patches are what ``analysis.explain.prototype_patches`` finds in the dataset (``nearest_patches``, the full
report's setting by default), read from ``--data-root``, so a stored file is never read back in its place; the JSON
beside them names the settings, the labels and the sha256 of the weights file that found them (another file is
never served them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patronus_diffusion import Patronus
from patronus_diffusion.analysis.explain import PATCHES_FILE, prototype_patches, save_patches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a model folder (run, saved model or pretrained/NAME)")
    p.add_argument("--data-root", required=True, help="the model's dataset (the patches are found in it)")
    p.add_argument("--k", type=int, default=5, help="patches per prototype")
    p.add_argument("--n-images", type=int, default=10000, help="seeded images of the split searched (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    args = p.parse_args()
    pat = Patronus.from_pretrained(args.model, device="cpu", data_root=args.data_root)
    patches = prototype_patches(pat, args.k, args.n_images, args.seed, args.split, stored=False)
    path = save_patches(pat, args.model, patches, args.n_images)
    print(f"{path}: {patches.k} patches of {patches.searched} {args.split} images for each of "
          f"{pat.num_prototypes} prototypes, crops {tuple(patches.crops.shape[2:])}; see {PATCHES_FILE}")


if __name__ == "__main__":
    main()
