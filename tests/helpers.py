"""Small helpers shared by several test modules (not fixtures)."""

import contextlib
import threading

import numpy as np
import torch

from patronus_diffusion.data import biased as B


def quiet_cfg(cfg, **train_fields):
    """A copy of ``cfg`` with previews and intermediate checkpoints off and the given train.* fields set."""
    c = cfg.copy()
    c.train.sample_every = 0
    c.train.checkpoint_every = 0
    for k, v in train_fields.items():
        setattr(c.train, k, v)
    return c


# A gradient-trained tiny UNet does not learn to use s within a test budget (measured: 400 steps on
# 8-px images, edit effects < 1e-4). The end-to-end test therefore fits the decoder in closed form:
# a Gaussian model x0 | s ~ N(W s + b, sigma^2 I) with ridge-regressed W, b ("learned" from the
# training split), whose exact denoiser is E[x0 | x_t, s] = mu + sqrt(ab) sigma^2 / (ab sigma^2 + 1 - ab)
# (x_t - sqrt(ab) mu). On biased data the A and B prototypes are collinear, so the regression spreads
# the mark over both: the shortcut. The prototypes are "pushed" onto the bar and mark patches.
SIZE = 12


def planted_images(a, b, rng):
    x = np.zeros((len(a), SIZE, SIZE), np.uint8)
    for i in range(len(a)):
        c = rng.integers(8, 10)
        if a[i]:
            x[i, 7:12, c:c + 2] = 255  # vertical bar (bottom right)
        else:
            x[i, c:c + 2, 7:12] = 255  # horizontal bar
        if b[i]:
            x[i, 0:3, 0:3] = 255  # the planted mark (top left, seen only by feature unit (0, 0))
    # a nuisance tied to neither attribute (a grey block top right, on a random half): something an unrelated
    # prototype can carry, for the null edit
    x[np.random.default_rng(7).random(len(a)) < 0.5, 0:2, 9:12] = 160
    return x


def write_planted(root, correlation, n=96, seed=0, coin=False):
    """``coin`` adds a third binary attribute drawn at random, which no image shows."""
    from PIL import Image

    rows, rng_coin = [], np.random.default_rng(seed + 99)
    for split in ("train", "test"):
        a = np.arange(n) % 2 == 1
        b = B.assign_mark(a, correlation, seed + (split == "test"))
        imgs = planted_images(a, b, np.random.default_rng(seed))
        for i in range(n):
            rel = f"images/{split}_{i:03d}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i]).save(root / rel)
            values = {"vertical": float(a[i]), "mark": float(b[i])}
            if coin:
                values["coin"] = float(rng_coin.integers(0, 2))
            rows.append(B.ManifestRow(rel, split, values))
    B.write_manifest(root / "attributes.csv", rows, ["vertical", "mark"] + (["coin"] if coin else []))
    return root


def planted_bar_images(vertical, mark, nuisance, rng):
    """12-px images of the audit and debias tests: a vertical or horizontal bar (the task), a white corner mark and
    a grey nuisance block (top right), as uint8."""
    x = np.zeros((len(vertical), SIZE, SIZE), np.uint8)
    for i in range(len(vertical)):
        c = rng.integers(8, 10)
        if vertical[i]:
            x[i, 7:12, c:c + 2] = 255
        else:
            x[i, c:c + 2, 7:12] = 255
        if mark[i]:
            x[i, 0:3, 0:3] = 255
        if nuisance[i]:
            x[i, 0:2, 9:12] = 160
    return x


class GaussianDenoiser(torch.nn.Module):
    """The exact denoiser of x0 | s ~ N(W [s, 1], sigma^2 I), W ridge-regressed on the training images.

    The fit is solved in float64: prototypes that repeat one vector give equal columns of s, the ridge system is
    then nearly singular (condition number about 3e7 at ridge 1e-3), and in float32 the split of the weight among
    the equal columns is rounding noise that a single prototype's edit would decode (tests/test_audit.py)."""

    def __init__(self, prototypes, schedule, x, s, ridge=1e-3):
        super().__init__()
        self.prototypes = prototypes
        self.abar = schedule.alphas_cumprod.float()
        feats = torch.cat([s, torch.ones(len(s), 1)], 1).double()
        flat = x.flatten(1).double()
        w = torch.linalg.solve(feats.T @ feats + ridge * torch.eye(feats.shape[1], dtype=torch.float64), feats.T @ flat)
        self.sigma2 = float(((feats @ w - flat) ** 2).mean()) + 1e-3
        self.w = w.float()
        self.shape = x.shape[1:]

    def forward(self, x, t, s):
        mu = (torch.cat([s, torch.ones(len(s), 1)], 1) @ self.w).view(-1, *self.shape)
        ab = self.abar[t.long()].view(-1, 1, 1, 1)
        x0 = mu + ab.sqrt() * self.sigma2 / (ab * self.sigma2 + 1 - ab) * (x - ab.sqrt() * mu)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


def closed_form_setup(root, tiny_cfg, size=None):
    """The config of a planted folder, a seeded prototype network (not trained) and the training images with their
    latent maps: ``(cfg, net, ds, x, z)``, for a test to push prototypes onto planted features and fit
    :class:`GaussianDenoiser` (through :func:`closed_form_patronus`)."""
    from patronus_diffusion.config import apply_overrides
    from patronus_diffusion.data import load_dataset
    from patronus_diffusion.models.prototypes import PrototypeNetwork

    size = size or SIZE
    cfg = apply_overrides(tiny_cfg, [f"data.root={root}", "data.dataset=folder", f"data.image_size={size}",
                                     f"data.attributes_csv={root / 'attributes.csv'}", "diffusion.timesteps=100"])
    torch.manual_seed(0)
    net = PrototypeNetwork(1, size, cfg.prototypes).requires_grad_(False)
    ds = load_dataset(cfg.data, "train")
    x = ds.get_batch(range(len(ds)))
    return cfg, net, ds, x, net.encoder(x)


def closed_form_patronus(cfg, net, x):
    """A Patronus whose decoder is the exact Gaussian denoiser fitted to ``net``'s s of the images ``x``."""
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule.from_config(cfg.diffusion)
    return Patronus(GaussianDenoiser(net, schedule, x, net(x).s), cfg, torch.device("cpu"))


def trained_on_labels_of(pat, root):
    """The closed-form model ``pat`` with its run's training data pointed at the planted folder ``root``: the labels
    the diagnosis checks a claimed coupling against (a rewired decoder's coupling is the model's own unless the
    data it "learned" from hold it). Returns a new Patronus sharing the decoder."""
    from patronus_diffusion.api import Patronus
    from patronus_diffusion.config import apply_overrides

    cfg = apply_overrides(pat.config, [f"data.root={root}", f"data.attributes_csv={root / 'attributes.csv'}"])
    return Patronus(pat.model, cfg, pat.device)


def fitted_model(root, tiny_cfg):
    cfg, net, ds, x, z = closed_form_setup(root, tiny_cfg)
    # push: p0 = a vertical-bar patch, p1 = a horizontal-bar patch, p2 = the mark, p3 = an empty corner
    a, b = ds.attributes[:, 0] > 0, ds.attributes[:, 1] > 0
    centre = z.shape[-1] - 1
    with torch.no_grad():
        net.prototypes[0] = z[int(np.flatnonzero(a)[0]), :, centre, centre]
        net.prototypes[1] = z[int(np.flatnonzero(~a)[0]), :, centre, centre]
        net.prototypes[2] = z[int(np.flatnonzero(b)[0]), :, 0, 0]
        net.prototypes[3] = z[int(np.flatnonzero(~b)[0]), :, 0, 0]
        # p4 = the nuisance block (top right), unrelated to A and B: the null edit's prototype
        nuisance = (x[:, 0, 0:2, 9:12] > -0.5).flatten(1).all(1).numpy()
        net.prototypes[4] = z[int(np.flatnonzero(nuisance)[0]), :, 0, centre]
        # the remaining prototypes repeat the empty corner: a random prototype would respond to bars and mark
        # at once, and the linear decoder below would then tie them together even in the unbiased control
        net.prototypes[5:] = net.prototypes[3]
    return closed_form_patronus(cfg, net, x)


class Brightness(torch.nn.Module):
    """(B, 2) logits from the mean brightness: an input-independent classifier is enough to check the plumbing."""

    def forward(self, x):
        v = 4.0 * x.mean((1, 2, 3))
        return torch.stack([-v, v], 1)


@contextlib.contextmanager
def serving(session, **kwargs):
    """The explorer's HTTP server for ``session`` on a free local port (yields the port), shut down after."""
    from patronus_diffusion.explore.server import make_server

    server = make_server(session, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
