"""Named configurations: the papers' reference setups and the CPU-sized ones this project trains and ships.

    from patronus_diffusion.presets import get_preset
    cfg = get_preset("cpu-small")          # a validated RunConfig; `patronus presets --show cpu-small` prints it
"""

from __future__ import annotations

import dataclasses

from .config import (ClassifierConfig, ConfigError, DataConfig, DiffusionConfig, PrototypeConfig, ProtoDiffConfig,
                     RunConfig, SampleConfig, TrainConfig, UNetConfig)


def _paper(dataset: str, image_size: int, channels: int, num_prototypes: int, batch: int, epochs: float,
           protos: PrototypeConfig | None = None, resize: str = "center-crop") -> RunConfig:
    """The reference configuration: 25 M-parameter UNet, constant LR 1e-5, AdamW defaults, no clipping."""
    p = protos or PrototypeConfig()
    p = dataclasses.replace(p, num_prototypes=num_prototypes)
    return RunConfig(
        preset="",
        data=DataConfig(dataset=dataset, image_size=image_size, channels=channels, resize=resize),
        prototypes=p,
        unet=UNetConfig(),
        diffusion=DiffusionConfig(),
        train=TrainConfig(batch_size=batch, lr=1e-5, weight_decay=0.01, max_epochs=epochs, grad_clip=None),
    )


def _cpu_small() -> RunConfig:
    """A Fashion-MNIST model sized for 2 CPU cores (see README, 'Choosing cpu-small').

    Prototypes start on real patch features (``prototypes.init=patches``): with the reference's U[0, 1) init
    the 30 similarities of this preset collapse onto one feature (README, 'Measured'). s is LayerNorm-ed
    before the condition MLP (``unet.cond_norm=layer``): without it the decoder of a CPU budget barely reads
    s (scripts/studies/cond_norm_study.sh: after 1 epoch, s-use 4.6 % vs 13.2 %, probe accuracy 0.47 vs 0.69,
    FID 95.9 vs 90.5). Patches and prototypes are compared by cosine (``prototypes.metric=cosine``): on raw
    features s sits at ~0.03 and varies by ~0.004 between images; on unit-length ones it varies 25x more. s
    conditions the UNet by scale and shift of its normalised features (``unet.cond_mode=film``). Together, after
    1 epoch against LayerNorm + add on raw features: rise 0.041 vs 0.030, class agreement 0.425 vs 0.282, the
    decoder's use of s 25 % vs 13 %, probe accuracy 0.735 vs 0.689, FID(500) 81.1 vs 90.4
    (scripts/studies/steering_study.py, docs/steering.md). Edits decode with guidance on the edit difference
    (``sample.edit_guidance=0.7``, eps(s') + 0.7 (eps(s') - eps(s))): on the 20-epoch shipped model it takes the
    median rise from 0.35 to 0.54 at an off-target of 0.096 (0.062 unguided) and edited images no less realistic
    by KID (scripts/studies/edit_guidance_sweep.sh, docs/steering.md).
    """
    return RunConfig(
        preset="cpu-small",
        data=DataConfig(dataset="fashion-mnist", image_size=32, channels=1),
        prototypes=PrototypeConfig(num_prototypes=30, init="patches", metric="cosine"),  # benchmarks/*_study.py
        unet=UNetConfig(
            base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_levels=(False, False, False), mid_attention=True, attention_heads=4,
            dropout=0.0, groups=8, cond_norm="layer", cond_mode="film",
        ),
        train=TrainConfig(batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=200, grad_clip=1.0,
                          ema_decay=0.999, max_epochs=1, sample_every=500, checkpoint_every=250),
        sample=SampleConfig(edit_guidance=0.7),
    )


def _cpu_demo() -> RunConfig:
    """`make demo`'s model: cpu-small with 10 prototypes instead of 30, so that more of a young model's edits steer.

    At the demo's budget (525 steps of 64, 0.56 epoch, 6 minutes on 2 threads) cpu-small's 30 prototypes barely
    steer: raising one to its own max moves the re-encoded s_J by 0.066 / 0.044 of the request (median over
    prototypes, 8 test images, training seeds 0 / 1), 2 and 3 of 30 by 0.3 or more. With 10, each learned three times as
    often: 0.227 / 0.052, with 5 and 3 of 10 by 0.3 or more, and lowering a prototype to its own min takes 0.39 /
    0.23 (30 prototypes: 0.06 / 0.08). The price is coarser edits (off-target 0.24 / 0.23 against 0.12): several
    switch the garment. A doubled learning rate (0.051) and a penalty on the correlation between prototypes
    (-0.015) did not help (scripts/studies/demo_recipe_study.sh, docs/steering.md). Trained longer, cpu-small's 30 stay
    the choice (the shipped model).
    """
    cfg = _cpu_small()
    cfg.prototypes.num_prototypes = 10
    return cfg


def _tiny() -> RunConfig:
    """For tests: a few-thousand-parameter model on 16-px images."""
    return RunConfig(
        preset="tiny",
        data=DataConfig(dataset="fashion-mnist", image_size=16, channels=1, limit=256),
        prototypes=PrototypeConfig(channels=(8, 16), kernels=(3, 3), strides=(2, 1), paddings=(1, 0),
                                   num_prototypes=6),
        unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(False, False),
                        mid_attention=True, attention_heads=2, dropout=0.0, groups=4),
        diffusion=DiffusionConfig(),
        train=TrainConfig(batch_size=16, lr=1e-3, weight_decay=0.0, grad_clip=1.0, ema_decay=0.99, max_steps=20,
                          log_every=5, sample_every=0, checkpoint_every=10),
        sample=SampleConfig(steps=5, ddim_steps=5),
    )


def _protodiff_fmnist_cpu() -> RunConfig:
    """ProtoDiffusion on Fashion-MNIST sized for 2 CPU cores: the cpu-small UNet with a 128-d class table."""
    cfg = _cpu_small()
    cfg.family = "protodiffusion"
    cfg.unet.cond_norm = "none"  # the class table's norms are part of what ProtoDiffusion compares
    cfg.unet.cond_mode = "add"  # the reference adds the class embedding to the time embedding
    cfg.protodiff = ProtoDiffConfig(classifier=ClassifierConfig(epochs=2.0, batch_size=64))
    cfg.sample = SampleConfig(sampler="dpmpp-2m", steps=10)
    cfg.train.max_epochs = None
    cfg.train.max_steps = 1500
    # the reference's schedule (warm-up to 2.5 lr over epochs/20, then a cosine to 0, stepped per epoch), with the
    # base LR lowered so that its peak is cpu-small's 1e-3
    cfg.train.lr_schedule = "protodiff"
    cfg.train.lr = 4e-4
    cfg.train.sample_every = 500
    cfg.train.checkpoint_every = 500
    return cfg


def _protodiff_tiny() -> RunConfig:
    """For tests: the tiny UNet, 2 classes, 8-d class table."""
    cfg = _tiny()
    cfg.family = "protodiffusion"
    cfg.protodiff = ProtoDiffConfig(num_classes=2, embed_dim=8, guidance=1.0,
                                    classifier=ClassifierConfig(channels=(4, 8), dim=8, epochs=1.0, batch_size=16))
    return cfg


def _protodiff_reference(dataset: str, image_size: int, channels: int, classes: int, epochs: float) -> RunConfig:
    """The reference configuration (ProtoDiffusion spec section 7.4): 28 M UNet with attention everywhere."""
    return RunConfig(
        family="protodiffusion",
        data=DataConfig(dataset=dataset, image_size=image_size, channels=channels),
        unet=UNetConfig(base_channels=64, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                        attention_levels=(True, True, True, True), mid_attention=True, attention_heads=1,
                        dropout=0.1, dropout2d=False, groups=32),
        train=TrainConfig(batch_size=256, lr=2e-4, weight_decay=1e-4, max_epochs=epochs, ema_decay=0.9999,
                          lr_schedule="protodiff"),
        sample=SampleConfig(sampler="ddim", steps=50),
        protodiff=ProtoDiffConfig(num_classes=classes, low_t_fraction=0.1,
                                  classifier=ClassifierConfig(channels=(64, 128, 256, 512))),
    )


_CHEXPERT_PROTOS = PrototypeConfig(channels=(32, 64, 64, 128, 128), kernels=(5, 5, 5, 5, 5),
                                   strides=(2, 2, 1, 1, 1), paddings=(1, 1, 0, 0, 0))


def _preset_factories():
    return {
        "paper-fmnist": lambda: _paper("fashion-mnist", 32, 1, 30, 128, 100),
        "paper-mnist": lambda: _paper("mnist", 32, 1, 30, 128, 100),
        "paper-cifar10": lambda: _paper("cifar10", 32, 3, 100, 128, 300),
        "paper-celeba64": lambda: _paper("celeba", 64, 3, 100, 64, 300, resize="squash"),  # 178x218 -> 64x64
        "paper-ffhq64": lambda: _paper("ffhq", 64, 3, 100, 64, 300),
        "paper-chexpert": lambda: _paper("chexpert", 224, 1, 100, 16, 300, _CHEXPERT_PROTOS),
        "cpu-small": _cpu_small,
        "cpu-demo": _cpu_demo,
        "tiny": _tiny,
        "protodiff-fmnist-cpu": _protodiff_fmnist_cpu,
        "protodiff-tiny": _protodiff_tiny,
        "protodiff-cifar10": lambda: _protodiff_reference("cifar10", 32, 3, 10, 1500),
        "protodiff-tiny-imagenet": lambda: _protodiff_reference("tiny-imagenet", 64, 3, 200, 1500),
    }


PRESETS = tuple(_preset_factories())


def get_preset(name: str) -> RunConfig:
    factories = _preset_factories()
    if name not in factories:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(factories)}")
    cfg = factories[name]()
    cfg.preset = name
    return cfg.validate()
