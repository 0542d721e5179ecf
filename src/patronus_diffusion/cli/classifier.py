"""`patronus train-classifier`: a small CNN of one attribute on real images, saved as TorchScript for `audit`."""

from __future__ import annotations

from pathlib import Path

from .common import add_device, formatter, print_outputs


def register(sub) -> None:
    p = sub.add_parser(
        "train-classifier", help="train a small CNN of one attribute on real images (TorchScript, for `audit`)",
        formatter_class=formatter(),
        description="Train a small binary CNN to predict --label from a dataset's training split (real images "
                    "only) and save it as TorchScript, the file `patronus audit --classifier` takes, with FILE.json "
                    "beside it: the data, label, seed, epochs, the input range, size and channels the file takes, "
                    "train and test accuracy, test AUROC and, with --groups, the accuracy in every (label, group) "
                    "cell of the test split and the worst of them. --eval-data-root scores a second set's test "
                    "split the same way (e.g. the unbiased twin of a biased training set). See docs/audit.md.")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="a dataset name (fashion-mnist, folder, ...); the default is folder with "
                                     "--data-root, else fashion-mnist")
    g.add_argument("--data-root", metavar="DIR", help="the image folder (or the dataset's files)")
    g.add_argument("--attributes-csv", metavar="FILE",
                   help="the folder's attribute CSV (file, split, columns...); default: DIR/attributes.csv when "
                        "it exists")
    g.add_argument("--image-size", type=int, default=32, help="the size images are trained at (and the file takes)")
    g.add_argument("--channels", type=int, default=1, choices=(1, 3), help="channels (1 grey, 3 RGB)")
    g.add_argument("--limit", type=int, help="train on at most this many training images (a seeded subset)")
    g.add_argument("--eval-data-root", metavar="DIR",
                   help="a second folder of the same format whose test split is scored too (with its "
                        "DIR/attributes.csv)")
    p.add_argument("--label", required=True, metavar="SPEC",
                   help="what to predict: a binary attribute column, NAME=v1+v2, class:c1+c2 or not:SPEC")
    p.add_argument("--groups", metavar="ATTR[,ATTR]",
                   help="attributes whose (label, attribute) cells get their own test accuracy; the worst of them "
                        "is the worst-group accuracy")
    p.add_argument("--epochs", type=float, default=5.0, help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    p.add_argument("--range", default="0,1", metavar="LOW,HIGH",
                   help="the value range the saved file takes (0,1 or -1,1; any LOW,HIGH); pass the same to "
                        "`audit --classifier-range`")
    p.add_argument("--out", default="results/classifier.pt", metavar="FILE.pt",
                   help="the TorchScript file; FILE.json is written beside it")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_train_classifier)


def data_config(dataset: str | None, root: str | None, csv: str | None, image_size: int, channels: int):
    """The DataConfig of ``--dataset/--data-root/--attributes-csv`` (a folder's own attributes.csv by default)."""
    from ..config import DataConfig
    from ..utils.errors import UsageError

    name = dataset or ("folder" if root else "fashion-mnist")
    if image_size < 4:
        raise UsageError(f"--image-size must be at least 4, got {image_size}")
    if csv is None and name == "folder" and root and (Path(root) / "attributes.csv").is_file():
        csv = str(Path(root) / "attributes.csv")
    return DataConfig(dataset=name, root=root, image_size=image_size, channels=channels, attributes_csv=csv)


def cmd_train_classifier(args) -> int:
    from ..evaluation.classifier import check_settings, parse_input_range, train_classifier
    from ..utils.device import pick_device

    value_range = parse_input_range(args.range)
    check_settings(args.epochs, args.batch_size, args.lr, args.limit, args.out)
    device = pick_device(args.device)
    cfg = data_config(args.dataset, args.data_root, args.attributes_csv, args.image_size, args.channels)
    eval_cfg = (data_config("folder", args.eval_data_root, None, args.image_size, args.channels)
                if args.eval_data_root else None)
    groups = [g for g in (args.groups or "").replace(" ", "").split(",") if g]
    r = train_classifier(cfg, args.label, args.out, epochs=args.epochs, seed=args.seed, value_range=value_range,
                         limit=args.limit, groups=groups, eval_cfg=eval_cfg, batch_size=args.batch_size,
                         lr=args.lr, device=device, progress=not args.no_progress)
    print(f"classifier of {r['label']}: train accuracy {r['train_accuracy']:.3f}, test accuracy "
          f"{r['test_accuracy']:.3f}, test AUROC {_num(r['test_auroc'])} ({r['data']['n_train_used']} training "
          f"images, {r['epochs']:g} epochs, {r['seconds']:.0f} s)")
    for where, scores in (("test", r["test"]), ("eval", r.get("eval"))):
        for name, gr in ((scores or {}).get("groups") or {}).items():
            cells = ", ".join(f"{r['label']}={c['label']}/{name}={c[name]}: {c['accuracy']:.3f} (n {c['n']})"
                              for c in gr["cells"])
            print(f"  {where} accuracy by {name}: {cells}; worst group {gr['worst_group_accuracy']:.3f}")
    if r.get("eval"):
        print(f"  eval set: accuracy {r['eval']['accuracy']:.3f}, AUROC {_num(r['eval']['auroc'])}")
    print(f"  audit it with: patronus audit --run RUN {r['audit_flags']} --attribute A")
    print_outputs("wrote", {"classifier": Path(args.out), "record": Path(args.out).with_suffix(".json")})
    return 0


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
