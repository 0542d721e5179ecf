import pytest
import torch

from patronus_diffusion.config import get_preset
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
