"""`patronus import-reference`: a checkpoint of the reference Patronus code -> a run folder (api/reference_import)."""

from __future__ import annotations

from .common import formatter, print_outputs


def register(sub) -> None:
    p = sub.add_parser("import-reference", help="convert a checkpoint of the reference code into a run folder",
                       formatter_class=formatter(),
                       description="Reads the reference's checkpoints/version_N/ckpt.tar (or a saved state_dict) "
                                   "with torch.load(weights_only=True) only, maps its module names onto this "
                                   "toolkit's, checks the frozen tensors (the all-ones 'ones', the sinusoidal time "
                                   "table), and writes OUT/config.json, OUT/model.safetensors and OUT/import.json. "
                                   "Every command then takes --run OUT. The architecture is read off the tensors; "
                                   "the dataset and the prototype encoder's strides and paddings come from --preset.")
    p.add_argument("--checkpoint", required=True, help="the reference's ckpt.tar (or a .pt state dict)")
    p.add_argument("--preset", default="paper-fmnist",
                   help="the paper-* preset of the checkpoint's dataset (paper-fmnist, paper-celeba64, ...)")
    p.add_argument("--out", required=True, help="the run folder to write (must not exist or be empty)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_import_reference)


def cmd_import_reference(args) -> int:
    from ..api.reference_import import import_reference

    cfg, out = import_reference(args.checkpoint, args.out, args.preset, overwrite=args.force)
    u = cfg.unet
    print(f"imported: {cfg.prototypes.num_prototypes} prototypes, UNet base {u.base_channels} x {u.channel_mult}, "
          f"{u.num_res_blocks} blocks per level, {cfg.data.channels}-channel {cfg.data.image_size} px")
    print_outputs("wrote", {"run": out, "config": out / "config.json", "weights": out / "model.safetensors",
                            "manifest": out / "import.json"})
    return 0
