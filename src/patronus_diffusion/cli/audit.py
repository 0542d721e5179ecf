"""`patronus audit`: does a classifier use an attribute? Prototype counterfactuals against a null edit."""

from __future__ import annotations

from .common import add_device, add_run, formatter, print_outputs


def register(sub) -> None:
    p = sub.add_parser(
        "audit", help="audit a classifier (TorchScript) for an attribute with prototype counterfactuals",
        formatter_class=formatter(),
        description="On a balanced set of clean test images (half with the attribute A, half without), flip A by "
                    "editing A's top prototypes (raised to their maximum where A is absent, lowered to their minimum "
                    "where present), decoded from each image's own inversion. An outside judge of A confirms each "
                    "flip (the project's class judge for class:NAME attributes, else a small CNN trained on the "
                    "run's real training images and cached); only confirmed counterfactuals count. The null "
                    "counterfactual edits the prototypes least associated with A by a request of the same size, "
                    "so that what any edit does is separated from what A does. Measures of the classifier's "
                    "probability p of --target (FastDiME): MAD = mean |p(x) - p(x_cf)|, the signed mean change "
                    "among images with A and among those without, the same for the null counterfactual and the "
                    "differences, with 95% bootstrap intervals; the classifier's AUROC for A on real and "
                    "counterfactual images, and for --label. Verdict from the interval of MAD - MAD_null: 'uses the "
                    "attribute' (above tau), 'effect below tau', 'no effect detected', 'inconclusive'. Writes "
                    "audit.json, audit.csv (per image) and audit.png (the images whose p moved most, with the "
                    "edited prototype's box).")
    add_run(p)
    p.add_argument("--classifier", required=True, metavar="FILE",
                   help="the classifier as a TorchScript file (torch.jit.script(model).save(FILE)); it must return "
                        "(B, K) logits or (B,) / (B, 1) binary logits. Pickles and state dicts are refused")
    p.add_argument("--attribute", required=True, metavar="A",
                   help="the attribute to flip: a binary column of the run's attribute CSV, NAME=v1+v2, class:c1+c2, "
                        "or not:SPEC")
    p.add_argument("--target", type=int, help="the class whose probability is audited (default: class 1 of a binary "
                                              "classifier; required for more than 2 classes)")
    p.add_argument("--label", metavar="SPEC",
                   help="the classifier's true label on the run's data (an attribute spec, e.g. class:Sneaker+Ankle "
                        "boot): balances the images by it too and adds the classifier's AUROC for it on real, "
                        "counterfactual and null images")
    p.add_argument("--n", type=int, default=48, help="test images, half with A and half without")
    p.add_argument("--classifier-range", default="-1,1", metavar="LOW,HIGH",
                   help="the value range the classifier takes, e.g. 0,1 or 0,255; images are mapped linearly from "
                        "the run's [-1, 1]")
    p.add_argument("--classifier-size", metavar="N|HxW",
                   help="resize (bilinear) to this size for the classifier (default: the run's image size)")
    p.add_argument("--classifier-channels", type=int, metavar="1|3",
                   help="channels the classifier takes: grey -> RGB repeats the channel, RGB -> grey uses the luma "
                        "weights (default: the run's channels)")
    p.add_argument("--top-k", type=int, default=2, help="prototypes edited for A; the null edit edits as many")
    p.add_argument("--steps", type=int, default=25, help="DDIM inversion/decoding steps")
    p.add_argument("--edit-guidance", type=float, default=0.0,
                   help="decode each edit s' with eps(s') + w (eps(s') - eps(s)). The default 0 is the decoder's "
                        "own conditional, whatever the run's sample.edit_guidance says; w > 0 amplifies everything "
                        "an edit changes. Written into audit.json and the figure")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="tau: the change of MAD beyond the null counterfactual's (in probability) that counts as use")
    p.add_argument("--min-judge-auroc", type=float, default=0.75,
                   help="the judge must read A on clean test images with at least this AUROC, or no counterfactual "
                        "is confirmed")
    p.add_argument("--rank-limit", type=int, default=4000, help="training images for ranking A's prototypes")
    p.add_argument("--judge-cache", metavar="DIR", help="folder of cached judges (default: $PATRONUS_CACHE/judge)")
    p.add_argument("--out", default="results/audit")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    import torch

    from ..analysis.audit import audit, check_settings
    from ..analysis.audit_models import check_channels, parse_range, parse_size
    from ..api import Patronus
    from ..utils.device import pick_device

    check_settings(args.n, args.steps, args.top_k, args.edit_guidance, args.threshold, args.min_judge_auroc,
                   args.rank_limit)
    parse_range(args.classifier_range), parse_size(args.classifier_size), check_channels(args.classifier_channels)
    device = pick_device(args.device)  # a device this machine does not have is a UsageError there
    torch.manual_seed(args.seed)
    pat = Patronus.load(args.run, weights=args.weights, device=str(device))
    result = audit(pat, args.classifier, args.attribute, target=args.target, n=args.n, label=args.label,
                   top_k=args.top_k, steps=args.steps, edit_guidance=args.edit_guidance, threshold=args.threshold,
                   min_judge_auroc=args.min_judge_auroc, rank_limit=args.rank_limit, seed=args.seed,
                   classifier_range=args.classifier_range, classifier_size=args.classifier_size,
                   classifier_channels=args.classifier_channels, judge_cache=args.judge_cache,
                   progress=not args.no_progress)
    files = result.write(args.out)
    print(result.summary())
    print_outputs("wrote", files)
    return 0

