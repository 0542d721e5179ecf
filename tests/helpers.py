"""Small helpers shared by several test modules (not fixtures)."""


def quiet_cfg(cfg, **train_fields):
    """A copy of ``cfg`` with previews and intermediate checkpoints off and the given train.* fields set."""
    c = cfg.copy()
    c.train.sample_every = 0
    c.train.checkpoint_every = 0
    for k, v in train_fields.items():
        setattr(c.train, k, v)
    return c
