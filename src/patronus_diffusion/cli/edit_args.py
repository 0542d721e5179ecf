"""Arguments and model loading shared by the explanation and editing commands (cli/explain.py, cli/edit.py).

Every edit follows s = f(x0) -> x_T = DDIM-invert(x0, s) -> s' -> DDIM(x_T, s'), batched; "max" means
max(s_X) over a fixed, seeded reference set X (--ref-n, --ref-seed), which is saved with the results.
"""

from __future__ import annotations

import torch

from ..diffusion.samplers import SAMPLERS
from ..utils.errors import UsageError
from .common import add_device, add_images, add_inversion, add_run, apply_inversion, parse_ids


def add_edit_args(p, n: int, images: bool = True, ref_seed: bool = True) -> None:
    add_run(p)
    if images:
        add_images(p, default_n=n)
    add_device(p)
    p.add_argument("--steps", type=int, default=None,
                   help="DDIM steps for inversion and decoding (default: the run's sample.ddim_steps)")
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS),
                   help="decoding sampler (default: the run's sample.decode_sampler, ddim; eta=0 DDIM is the exact "
                        "mirror of the inversion)")
    add_inversion(p)
    p.add_argument("--ref-n", type=int, default=256, help="size of the reference set X for max(s_X) and quantiles")
    if ref_seed:
        p.add_argument("--ref-seed", type=int, default=0, help="seed of the reference set X (fixed while --seed "
                                                               "changes the picked images)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="decode with classifier-free guidance on s, eps(s') + W (eps(s') - eps(null)); needs a model "
                        "trained with train.cond_dropout > 0 (the inversion stays unguided)")
    p.add_argument("--edit-guidance", type=float, default=None, metavar="W",
                   help="decode each edit s' with guidance on the edit difference, eps(s') + W (eps(s') - eps(s)), "
                        "s = the image's own s: amplifies what the edit changes, works for every model, leaves the "
                        "reconstruction as it is; twice the network evaluations of edited images (default: the "
                        "run's sample.edit_guidance; 0 = off)")
    p.add_argument("--batch-size", type=int, default=64, help="images per network call (edits are chunked)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_prototypes(text: str | None, P: int, what: str = "--prototypes") -> list[int] | None:
    """'0,3,17' -> [0, 3, 17] (checked against P); None or '' -> None (all / the command's default)."""
    return parse_ids(text, P, what, "prototype ids")


def load_model(args):
    from ..api import Patronus

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    torch.manual_seed(args.seed)
    return apply_inversion(Patronus.load(args.run, args.weights, args.device, batch_size=args.batch_size), args)


def steps_of(pat, args) -> int:
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    return args.steps or pat.config.sample.ddim_steps


def reference_of(pat, args):
    """The reference set X of --ref-n images seeded by --ref-seed (an encoding, no inversion)."""
    from ..edit import reference_set

    return reference_set(pat, n=args.ref_n, seed=args.ref_seed)


def edit_inputs(args):
    """(pat, images, names, plan fields) every edit command starts from: the model, the selected images and
    the EditPlan fields its flags give (:func:`plan_args`)."""
    from .common import select_images

    pat = load_model(args)
    x, names = select_images(pat, args)
    return pat, x, names, plan_args(pat, args, names)


def plan_args(pat, args, names) -> dict:
    """The EditPlan fields every command takes from its flags: names, steps, sampler, seed."""
    return {"names": names, "steps": steps_of(pat, args), "sampler": args.sampler, "seed": args.seed,
            "guidance": args.guidance, "edit_guidance": args.edit_guidance}


def parse_window(text: str | None) -> tuple[float, float] | None:
    """--window LO,HI -> (LO, HI), checked (None without the flag)."""
    from ..edit import check_window

    if text is None:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        numbers = (float(parts[0]), float(parts[1]))
    except ValueError:
        raise UsageError(f"--window {text!r}: write two numbers LO,HI with 0 <= LO <= HI <= 1, e.g. --window 0.5,1"
                         ) from None
    try:
        return check_window(numbers)
    except UsageError as e:
        raise UsageError(f"--window {text!r}: {e}") from None
