"""Importing a checkpoint of the reference code: a synthetic state dict in the reference's own layout (module names
and shapes written out here from the reference's module tree, independently of the converter) becomes a run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from patronus_diffusion.api import Patronus
from patronus_diffusion.api.reference_import import import_reference
from patronus_diffusion.cli.main import main
from patronus_diffusion.runs import CheckpointError

# a tiny reference model: 16 px grey, base 8, levels (1, 2), 1 block per level, attention in the bottleneck only,
# P = 6 prototypes on a 2-layer encoder 1 -> 8 -> 16 (the tiny preset's strides (2, 1) and paddings (1, 0))
BASE, MULTS, NRES, P, ENC, TMULT = 8, (1, 2), 1, 6, (1, 8, 16), 4


def _resnet(prefix, c_in, c_out, emb, attention=False):
    shapes = {f"{prefix}.normlize_1.weight": (c_in,), f"{prefix}.normlize_1.bias": (c_in,),
              f"{prefix}.conv_1.weight": (c_out, c_in, 3, 3), f"{prefix}.conv_1.bias": (c_out,),
              f"{prefix}.dense_1.weight": (c_out, emb), f"{prefix}.dense_1.bias": (c_out,),
              f"{prefix}.dense_2.weight": (c_out, emb), f"{prefix}.dense_2.bias": (c_out,),
              f"{prefix}.normlize_2.weight": (c_out,), f"{prefix}.normlize_2.bias": (c_out,),
              f"{prefix}.conv_2.weight": (c_out, c_out, 3, 3), f"{prefix}.conv_2.bias": (c_out,)}
    if c_in != c_out:
        shapes |= {f"{prefix}.match_input.weight": (c_out, c_in, 1, 1), f"{prefix}.match_input.bias": (c_out,)}
    if attention:
        shapes |= {f"{prefix}.attention.group_norm.weight": (c_out,), f"{prefix}.attention.group_norm.bias": (c_out,),
                   f"{prefix}.attention.mhsa.in_proj_weight": (3 * c_out, c_out),
                   f"{prefix}.attention.mhsa.in_proj_bias": (3 * c_out,),
                   f"{prefix}.attention.mhsa.out_proj.weight": (c_out, c_out),
                   f"{prefix}.attention.mhsa.out_proj.bias": (c_out,)}
    return shapes


def reference_state_dict(seed=0):
    """The keys and shapes of the reference's Patronus_Unet for the tiny setting, filled with random values."""
    emb = BASE * TMULT
    shapes = {}
    for i in range(len(ENC) - 1):
        shapes[f"proactBlock.encoder.features.{2 * i}.weight"] = (ENC[i + 1], ENC[i], 3, 3)
        shapes[f"proactBlock.encoder.features.{2 * i}.bias"] = (ENC[i + 1],)
    shapes |= {"time_embeddings.time_blocks.1.weight": (emb, BASE), "time_embeddings.time_blocks.1.bias": (emb,),
               "time_embeddings.time_blocks.3.weight": (emb, emb), "time_embeddings.time_blocks.3.bias": (emb,),
               "cond_embeddings.vector_fc.0.weight": (emb, P), "cond_embeddings.vector_fc.0.bias": (emb,),
               "cond_embeddings.vector_fc.2.weight": (emb, emb), "cond_embeddings.vector_fc.2.bias": (emb,),
               "first.weight": (BASE, 1, 3, 3), "first.bias": (BASE,)}
    idx, cur, skips = 0, BASE, [BASE]
    for lv, m in enumerate(MULTS):
        for _ in range(NRES):
            shapes |= _resnet(f"encoder_blocks.{idx}", cur, BASE * m, emb)
            cur = BASE * m
            skips.append(cur)
            idx += 1
        if lv < len(MULTS) - 1:
            shapes |= {f"encoder_blocks.{idx}.downsample.weight": (cur, cur, 3, 3),
                       f"encoder_blocks.{idx}.downsample.bias": (cur,)}
            skips.append(cur)
            idx += 1
    shapes |= _resnet("bottleneck_blocks.0", cur, cur, emb, attention=True) | _resnet("bottleneck_blocks.1", cur, cur,
                                                                                       emb)
    idx = 0
    for lv in reversed(range(len(MULTS))):
        for _ in range(NRES + 1):
            shapes |= _resnet(f"decoder_blocks.{idx}", cur + skips.pop(), BASE * MULTS[lv], emb)
            cur = BASE * MULTS[lv]
            idx += 1
        if lv > 0:
            shapes |= {f"decoder_blocks.{idx}.upsample.1.weight": (cur, cur, 3, 3),
                       f"decoder_blocks.{idx}.upsample.1.bias": (cur,)}
            idx += 1
    shapes |= {"final.0.weight": (cur,), "final.0.bias": (cur,), "final.2.weight": (1, cur, 3, 3),
               "final.2.bias": (1,)}
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    sd["proactBlock.prototype_vectors"] = torch.rand((P, ENC[-1], 1, 1), generator=g)
    sd["proactBlock.ones"] = torch.ones((P, ENC[-1], 1, 1))
    half = BASE // 2  # the reference's frozen sinusoidal table: exp(-k ln(1e4) / (half - 1)), [sin, cos]
    freq = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    arg = torch.arange(1000.0)[:, None] * freq[None]
    sd["time_embeddings.time_blocks.0.weight"] = torch.cat([arg.sin(), arg.cos()], 1)
    return sd


@pytest.fixture
def ckpt(tmp_path):
    sd = reference_state_dict()
    path = tmp_path / "ckpt.tar"
    torch.save({"model": sd, "opt": {"state": {}, "param_groups": [{"lr": 1e-5}]}, "scaler": {"scale": 65536.0}},
               path)
    return path, sd


def test_a_reference_checkpoint_becomes_a_run_with_every_tensor_in_its_place(ckpt, tmp_path):
    path, sd = ckpt
    cfg, out = import_reference(path, tmp_path / "run", preset="tiny")
    assert (cfg.unet.base_channels, cfg.unet.channel_mult, cfg.unet.num_res_blocks) == (BASE, MULTS, NRES)
    assert cfg.unet.mid_attention and cfg.unet.attention_levels == (False, False)
    assert cfg.prototypes.num_prototypes == P and cfg.prototypes.channels == ENC[1:]
    pat = Patronus.load(out, device="cpu")
    ours = pat.model.state_dict()
    # spot checks written from the reference's module tree
    pairs = {"prototypes.encoder.net.2.weight": "proactBlock.encoder.features.2.weight",
             "unet.time_mlp.2.bias": "time_embeddings.time_blocks.3.bias",
             "unet.cond_mlp.0.weight": "cond_embeddings.vector_fc.0.weight",
             "unet.down.0.blocks.0.cond_proj.weight": "encoder_blocks.0.dense_2.weight",
             "unet.down.0.blocks.0.time_proj.weight": "encoder_blocks.0.dense_1.weight",
             "unet.down.0.sample.weight": "encoder_blocks.1.downsample.weight",
             "unet.down.1.blocks.0.shortcut.weight": "encoder_blocks.2.match_input.weight",
             "unet.mid.0.attention.qkv.weight": "bottleneck_blocks.0.attention.mhsa.in_proj_weight",
             "unet.mid.0.attention.proj.bias": "bottleneck_blocks.0.attention.mhsa.out_proj.bias",
             "unet.up.0.blocks.1.conv2.weight": "decoder_blocks.1.conv_2.weight",
             "unet.up.0.sample.weight": "decoder_blocks.2.upsample.1.weight",
             "unet.up.1.blocks.0.norm1.weight": "decoder_blocks.3.normlize_1.weight",
             "unet.final.2.weight": "final.2.weight"}
    for a, b in pairs.items():
        assert torch.equal(ours[a], sd[b]), (a, b)
    assert torch.equal(ours["prototypes.prototypes"], sd["proactBlock.prototype_vectors"][:, :, 0, 0])
    # s as the reference computes it: conv features, distances by convolutions with the prototype vectors
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    z = F.relu(F.conv2d(x, sd["proactBlock.encoder.features.0.weight"], sd["proactBlock.encoder.features.0.bias"],
                        stride=2, padding=1))
    z = F.relu(F.conv2d(z, sd["proactBlock.encoder.features.2.weight"], sd["proactBlock.encoder.features.2.bias"]))
    pv = sd["proactBlock.prototype_vectors"]
    d = F.relu(F.conv2d(z ** 2, sd["proactBlock.ones"]) - 2 * F.conv2d(z, pv) + (pv ** 2).sum((1, 2, 3)).view(-1, 1, 1))
    dmin = d.flatten(2).min(2).values
    torch.testing.assert_close(pat.encode(x).s, torch.log((dmin + 1) / (dmin + 1e-4)), rtol=1e-4, atol=1e-4)
    eps = pat.model(x, torch.tensor([10, 900]), pat.encode(x).s)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_a_tampered_or_foreign_checkpoint_is_refused_with_a_reason(ckpt, tmp_path):
    path, sd = ckpt
    bad = dict(sd)
    bad["proactBlock.ones"] = torch.zeros_like(sd["proactBlock.ones"])
    torch.save({"model": bad}, tmp_path / "ones.tar")
    with pytest.raises(CheckpointError, match="not all ones"):
        import_reference(tmp_path / "ones.tar", tmp_path / "a", preset="tiny")
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "other.tar")
    with pytest.raises(CheckpointError, match="not a reference Patronus checkpoint"):
        import_reference(tmp_path / "other.tar", tmp_path / "b", preset="tiny")
    extra = dict(sd, **{"decoder_blocks.99.conv_1.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="decoder_blocks"):
        import_reference(tmp_path / "extra.pt", tmp_path / "c", preset="tiny")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pickled_objects_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"model": Evil()}, tmp_path / "evil.tar")
    with pytest.raises(CheckpointError, match="weights-only"):
        import_reference(tmp_path / "evil.tar", tmp_path / "e", preset="tiny")


def test_import_reference_command(ckpt, tmp_path, capsys):
    path, _ = ckpt
    assert main(["import-reference", "--checkpoint", str(path), "--preset", "tiny", "--out", str(tmp_path / "r")]) == 0
    assert "6 prototypes" in capsys.readouterr().out
    assert (tmp_path / "r" / "import.json").exists()
    before = (tmp_path / "r" / "import.json").read_text()
    assert main(["import-reference", "--checkpoint", str(path), "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "r" / "import.json").read_text() == before
    assert main(["import-reference", "--checkpoint", str(path), "--preset", "tiny", "--out", str(tmp_path / "r"),
                 "--force"]) == 0


def test_weights_raw_loads_an_imported_run_whose_weights_are_the_raw_ones(ckpt, tmp_path, capsys):
    """import.json says the stored weights are the reference's raw ones: --weights raw takes them; an EMA-only
    export still refuses raw, saying why."""
    from patronus_diffusion.runs import export_run, resolve_run, weights_file

    path, _ = ckpt
    _, out = import_reference(path, tmp_path / "run", preset="tiny")
    assert json.loads((out / "import.json").read_text())["weights"] == "raw"
    assert weights_file(out, "raw") == out / "model.safetensors"
    raw, ema = Patronus.load(out, weights="raw", device="cpu"), Patronus.load(out, weights="ema", device="cpu")
    for k, v in raw.model.state_dict().items():
        assert torch.equal(v, ema.model.state_dict()[k]), k
    s_file = tmp_path / "s.csv"
    s_file.write_text(",".join(["0.5"] * P) + "\n")
    assert main(["sample", "--run", str(out), "--weights", "raw", "--s-file", str(s_file), "--steps", "2",
                 "--device", "cpu", "--out", str(tmp_path / "sample")]) == 0, capsys.readouterr().err
    assert (tmp_path / "sample" / "grid.png").exists()
    # an export of the imported run says what it holds: the raw weights, still loadable as raw
    exported = export_run(out, tmp_path / "exported")["manifest"]
    assert json.loads(exported.read_text())["weights"] == "raw"
    assert weights_file(exported.parent, "raw") == exported.parent / "model.safetensors"
    # an import.json written before it said which weights it holds: its note has always said raw
    meta = json.loads((out / "import.json").read_text())
    del meta["weights"]
    (out / "import.json").write_text(json.dumps(meta))
    assert weights_file(out, "raw") == out / "model.safetensors"
    # the shipped model is an EMA-only export: raw is refused, saying why
    with pytest.raises(CheckpointError, match="only EMA weights"):
        weights_file(resolve_run("pretrained:fashion-mnist"), "raw")
