import pytest
import torch

from patronus_diffusion.presets import get_preset
from patronus_diffusion.models import build_model


@pytest.mark.parametrize("preset,trainable", [
    ("paper-fmnist", 25_227_649),    # reference: 25,295,489 total incl. 64,000 frozen time table + 30x128 ones
    ("paper-cifar10", 25_257_411),   # reference: 25,334,211 total
    ("paper-chexpert", 25_894_145),  # reference: 25,970,945 total
])
def test_paper_presets_reproduce_reference_parameter_counts(preset, trainable):
    model = build_model(get_preset(preset))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_condition_is_required_and_used(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([10, 500])
    with pytest.raises(ValueError, match="condition"):
        model.unet(x, t, None)
    with pytest.raises(ValueError, match="shape"):
        model(x, t, torch.zeros(2, 3))
    s = model.prototypes(x).s
    a = model(x, t, s)
    b = model(x, t, s + 1.0)
    assert a.shape == x.shape
    assert not torch.allclose(a, b)


def test_layer_cond_norm_sees_s_only_up_to_per_image_shift_and_scale(tiny_cfg):
    """unet.cond_norm=layer: eps(x, t, a s + b) = eps(x, t, s) for a > 0, while a change of one prototype's
    similarity relative to the others still changes the output; no new parameters, so weights stay compatible."""
    torch.manual_seed(0)
    plain = build_model(tiny_cfg)
    tiny_cfg.unet.cond_norm = "layer"
    normed = build_model(tiny_cfg).eval()
    assert set(plain.state_dict()) == set(normed.state_dict())
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10, 400, 900])
    s = torch.rand(3, tiny_cfg.prototypes.num_prototypes)  # spread >> LayerNorm's eps (1e-5)
    base = normed(x, t, s)
    torch.testing.assert_close(normed(x, t, 7.0 * s + 0.3), base, atol=1e-3, rtol=0)  # plain: 3e-2
    raised = s.clone()
    raised[:, 0] = 3.0
    assert (normed(x, t, raised) - base).abs().max() > 1e-3


def test_unknown_cond_norm_is_rejected(tiny_cfg):
    from patronus_diffusion.config import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match="cond_norm"):
        apply_overrides(tiny_cfg, ["unet.cond_norm=batch"])
    tiny_cfg.unet.cond_norm = "batch"
    with pytest.raises(ValueError, match="cond_norm"):
        build_model(tiny_cfg)


def test_override_none_means_null_only_for_optional_fields():
    from patronus_diffusion.config import apply_overrides

    cfg = apply_overrides(get_preset("cpu-small"), ["unet.cond_norm=layer", "data.limit=none", "data.root=/x"])
    assert cfg.unet.cond_norm == "layer" and cfg.data.limit is None
    cfg = apply_overrides(cfg, ["unet.cond_norm=none", "data.root=none"])
    assert cfg.unet.cond_norm == "none" and cfg.data.root is None
    build_model(cfg)


def test_old_config_files_with_invert_steps_still_load(tmp_path):
    """sample.invert_steps was renamed ddim_steps; a run written before the rename loads with its value."""
    import json

    from patronus_diffusion.config import RunConfig
    from patronus_diffusion.presets import get_preset

    d = get_preset("tiny").to_dict()
    d["sample"]["invert_steps"] = d["sample"].pop("ddim_steps") + 7
    assert RunConfig.from_dict(json.loads(json.dumps(d))).sample.ddim_steps == get_preset("tiny").sample.ddim_steps + 7
