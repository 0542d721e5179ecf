"""`patronus explore`: a local web page with one slider per prototype (explore/)."""

from __future__ import annotations

import ipaddress
import sys

from .common import add_device, add_run, formatter


def register(sub) -> None:
    p = sub.add_parser("explore", help="a local web explorer: pick or upload an image, move a slider per prototype",
                       formatter_class=formatter(),
                       description="Serves a page on http://HOST:PORT (127.0.0.1 unless --host says otherwise). "
                                   "Pick a test image or upload one: it is encoded and inverted once (cached). "
                                   "Each slider sets one prototype's s_J within [1 % quantile, max] over the "
                                   "reference set; the image is decoded again from the cached inversion and "
                                   "re-encoded, so the page shows the requested s next to the reached one. Beside "
                                   "each slider: its prototype's nearest training patches (stored with the shipped "
                                   "model, else found in the dataset). An edit can be timed (the edited s only while "
                                   "LO <= t/T < HI), and the page says which guidance decodes the edits. Also: "
                                   "reset, interpolate between two images, sample from the run's prior, download "
                                   "the image and s. Without the dataset it takes uploads and prior samples. "
                                   "With --classifier (a TorchScript file, e.g. from `patronus train-classifier`) "
                                   "the page also shows the picked image's counterfactual for the classifier's "
                                   "attribute, flipped as `patronus audit` flips it, with the classifier's "
                                   "probability before and after. Ctrl-C stops the server.")
    add_run(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but a loopback address exposes the model to your network")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--steps", type=int, default=10, help="inversion and decoding steps per slider update")
    p.add_argument("--inversion", choices=("edict", "ddim"), default="edict",
                   help="edict: exact at any step count (2 network calls per step); ddim: 1 call per step but "
                        "the picked image comes back blurred at 10-20 steps")
    p.add_argument("--mix", type=float, default=None,
                   help="EDICT mixing weight p (default: 0.6 up to 10 steps, 0.8 beyond; docs/explore.md: these keep "
                        "edits closest to DDIM-100's)")
    p.add_argument("--ref-n", type=int, default=256, help="reference images behind the slider ranges")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance on s when decoding (models trained with train.cond_dropout)")
    p.add_argument("--log-requests", action="store_true", help="print every HTTP request")
    c = p.add_argument_group("counterfactuals for a classifier (patronus audit's edit, one image at a time)")
    c.add_argument("--classifier", metavar="FILE",
                   help="a TorchScript classifier returning logits; FILE.json beside it (written by `patronus "
                        "train-classifier`) names its attribute and input range")
    c.add_argument("--classifier-attribute", metavar="A",
                   help="the attribute to flip: a binary column, NAME=v1+v2, class:c1+c2 or not:SPEC (default: the "
                        "label in FILE.json)")
    c.add_argument("--classifier-range", metavar="LOW,HIGH",
                   help="the value range the classifier takes (default: FILE.json's, else -1,1)")
    c.add_argument("--classifier-size", metavar="N|HxW", help="its input size (default: FILE.json's, else the run's)")
    c.add_argument("--classifier-channels", type=int, metavar="1|3",
                   help="its input channels (default: FILE.json's, else the run's)")
    c.add_argument("--target", type=int, help="the class whose probability is shown (default: class 1 of a binary "
                                              "classifier; required for more than 2 classes)")
    add_device(p)
    p.set_defaults(func=cmd_explore)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_explore(args) -> int:
    from ..analysis.audit_flip import load_view
    from ..analysis.audit_models import check_channels, parse_range, parse_size
    from ..api import Patronus
    from ..explore.server import make_server
    from ..explore.session import ExplorerSession

    if args.classifier is not None:  # the flags' own checks, before the model loads
        parse_range(args.classifier_range or "-1,1"), parse_size(args.classifier_size)
        check_channels(args.classifier_channels)
    pat = Patronus.load(args.run, args.weights, args.device)
    view = None
    if args.classifier is not None:
        view = load_view(pat, args.classifier, args.classifier_attribute, args.classifier_range, args.target,
                         size=args.classifier_size, channels=args.classifier_channels, seed=args.seed)
    session = ExplorerSession(pat, steps=args.steps, inversion=args.inversion, mix=args.mix, ref_n=args.ref_n,
                              ref_seed=args.seed, prior=pat.load_prior(required=False), guidance=args.guidance,
                              classifier=view)
    if not is_loopback(args.host):
        print(f"patronus: warning: serving on {args.host}, not on 127.0.0.1: anyone who can reach this machine "
              "can use the explorer and upload files to it", file=sys.stderr)
    server = make_server(session, args.host, args.port, quiet=not args.log_requests)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"[explore] {pat.run_dir}: {pat.num_prototypes} prototypes, {args.steps} {args.inversion} steps per update")
    if view is not None:
        print(f"[explore] counterfactuals of {view.attribute} for {args.classifier} (prototypes "
              f"{view.flip.prototypes}, ranked on {view.flip.n_ranked} training images)")
    print(f"[explore] open http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\n[explore] stopped")
    finally:
        server.server_close()
    return 0
