"""Store the s of the reference set X beside a model's weights, so that "max" and quantile edits of a user's own
images need no dataset (``Patronus.shipped_reference_s``; the shipped model's ``reference_s.safetensors``).

    python scripts/make_reference_s.py src/patronus_diffusion/pretrained/fashion-mnist \
        --data-root /usr/share/datasets/fashion-mnist [--n 256 --seed 0 --split test]

X is what ``edit.reference_set(pat, n, seed, split)`` encodes from the dataset (read from
``--data-root``, so the stored file is never read back in its place); the JSON beside it names n, seed, split,
the dataset and the sha256 of the weights file that encoded it (another file is never served those s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from patronus_diffusion import Patronus
from patronus_diffusion.api.patronus import REFERENCE_S_FILE, REFERENCE_S_META
from patronus_diffusion.edit import reference_set
from patronus_diffusion.runs import sha256
from patronus_diffusion.utils.io import atomic_path, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a model folder (run, saved model or pretrained/NAME)")
    p.add_argument("--data-root", required=True, help="the model's dataset (X is encoded from it)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test")
    args = p.parse_args()
    pat = Patronus.from_pretrained(args.model, device="cpu", data_root=args.data_root)
    ref = reference_set(pat, n=args.n, seed=args.seed, split=args.split)
    with atomic_path(args.model / REFERENCE_S_FILE) as tmp:
        save_file({"s": ref.s.contiguous()}, str(tmp))
    d = pat.config.data
    write_json(args.model / REFERENCE_S_META, {
        "n": ref.n, "seed": ref.seed, "split": ref.split, "dataset": d.dataset, "limit": d.limit,
        "image_size": d.image_size, "num_prototypes": pat.num_prototypes, "max_s_X": round(ref.max, 6),
        "weights_sha256": sha256(pat.weights_path),
        "rule": "s of the first n of the permutation of the split seeded by seed (edit.reference_indices)",
        "made_by": "scripts/make_reference_s.py"})
    print(f"{args.model / REFERENCE_S_FILE}: s of {ref.n} images, max(s_X) = {ref.max:.4f}")


if __name__ == "__main__":
    main()
