"""Explanations and editing: math invariants (boxes, maps, faithfulness, slerp), components on the tiny
trained run (nearest patches, interpolation endpoints, emergence traces, batching), and every command
end to end."""

import json

import numpy as np
import pytest
import torch

from patronus_diffusion import Patronus
from patronus_diffusion import edit as E
from patronus_diffusion.analysis.explain import explain_gallery, nearest_patches
from patronus_diffusion.analysis.when import half_rise_timestep, trace_emergence
from patronus_diffusion.analysis.where import interpolation_matrix, locate, upsample_maps
from patronus_diffusion.cli.main import main
from patronus_diffusion.edit import Edit, EditPlan, run_plan
from patronus_diffusion.presets import get_preset
from patronus_diffusion.models.prototypes import PrototypeNetwork


@pytest.fixture(scope="module")
def pat(tiny_run):
    return Patronus.load(tiny_run, device="cpu")


# ------------------------------------------------------------------------------ math invariants
def _gradient_box(net: PrototypeNetwork, x: torch.Tensor, h: int, w: int):
    """Bounding box of the pixels whose value changes feature unit (h, w) (positive weights: no cancellation)."""
    x = x.clone().requires_grad_(True)
    net.encoder(x)[0, :, h, w].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    return int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1


@pytest.mark.parametrize("preset,size,channels", [("paper-fmnist", 32, 1), ("paper-celeba64", 64, 3),
                                                  ("paper-chexpert", 224, 1)])
def test_where_boxes_equal_brute_force_gradient_receptive_field(preset, size, channels):
    cfg = get_preset(preset).prototypes
    cfg.channels = tuple(min(c, 3) for c in cfg.channels)  # thin encoder: same geometry, fast
    cfg.num_prototypes = 2
    torch.manual_seed(0)
    net = PrototypeNetwork(channels, size, cfg)
    with torch.no_grad():
        for m in net.encoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.uniform_(0.01, 0.1)
                m.bias.fill_(0.01)
        net.prototypes.uniform_(0, 5)
    x = torch.rand(2, channels, size, size) + 0.1
    res = locate(net, x)
    assert res.maps.shape == (2, 2, size, size)
    for i in range(2):
        for k in range(2):
            h, w = res.location[i, k].tolist()
            assert tuple(res.boxes[i, k].tolist()) == _gradient_box(net, x[i:i + 1], h, w), (i, k, h, w)


def test_upsampled_map_is_exact_at_unit_centres_and_peaks_in_the_best_box():
    cfg = get_preset("paper-fmnist").prototypes
    cfg.channels = (4, 4, 4, 8)
    net = PrototypeNetwork(1, 32, cfg)
    rf = net.receptive_field  # start 6.5, jump 2: pixel 6 + 2i is the centre of unit i
    a = interpolation_matrix(rf)
    assert torch.allclose(a.sum(1), torch.ones(32))
    sim = torch.rand(1, 1, rf.size, rf.size)
    up = upsample_maps(sim, rf)
    assert torch.allclose(up[0, 0, 6::2, 6::2][: rf.size, : rf.size], sim[0, 0], atol=1e-6)
    res = locate(net, torch.rand(3, 1, 32, 32) * 2 - 1, top_k=2)
    for i in range(3):
        for k in range(2):
            y, x = divmod(int(res.maps[i, k].argmax()), 32)
            x0, y0, x1, y1 = res.boxes[i, k].tolist()
            assert x0 <= x < x1 and y0 <= y < y1
    assert torch.equal(res.s, res.s.sort(1, descending=True).values)  # top-k in order


class _StubPatronus:
    """decode(x_T, s) = x_T + 0.5 (s - x_T) + 0.1 [s == x_T]; encode(x).s = x flattened. With x_T = s(x0) the
    edited entries move half the requested way (rise 0.5) and every other entry moves by 0.1 (others 0.1)."""

    batch_size = 2
    num_prototypes = 4
    decode_sampler = "ddim"

    class config:  # noqa: N801
        class sample:  # noqa: N801
            ddim_steps, decode_sampler, inversion, edict_mix = 1, "ddim", "ddim", 0.8

    class _M:
        def __init__(self, s):
            self.s = s

    def decode(self, x_T, s, steps=None, sampler=None, progress=False, callback=None):
        base = x_T.flatten(1)
        out = base + 0.5 * (s - base) + 0.1 * (s == base).float()
        return out.view_as(x_T)

    def encode(self, x):
        return self._M(x.flatten(1))


def test_faithfulness_on_a_constructed_case_with_known_answer():
    s0 = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.3, 0.1, 0.2, 0.25], [0.05, 0.05, 0.05, 0.05]])
    inv = E.Inverted(x0=s0.view(3, 1, 1, 4), s=s0, x_T=s0.view(3, 1, 1, 4).clone(), steps=1)
    s_list = torch.stack([E.edit_s(s0, [1], 0.9), E.edit_s(s0, [0, 3], 2.0, mode="scale")])
    plan = EditPlan(images=inv.x0, edits=[Edit.parse("1=0.9", 4), Edit.parse("0*2,3*2", 4)], inverted=inv)
    res = run_plan(_StubPatronus(), plan)
    assert torch.equal(res.s_requested, s_list)
    assert res.images.shape == (2, 3, 1, 1, 4)
    assert torch.allclose(res.rise, torch.full((2, 3), 0.5), atol=1e-6)
    assert torch.allclose(res.others, torch.full((2, 3), 0.1), atol=1e-6)
    summ = E.summarise_edit(res.rise, res.others)
    assert summ["rise_median"] == 0.5 and summ["others_median"] == 0.1 and len(summ["rise"]) == 6
    # a requested change of zero has no rise (null), not a division by zero
    f = E.measure_edit(s0, s0, s0 + 0.2, [2])
    assert torch.isnan(f["rise"]).all() and E.summarise_edit(f["rise"], f["others"])["rise_median"] is None


def test_edit_values_specs_and_slerp():
    ref = E.Reference(s=torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), n=3, seed=0, split="test")
    assert ref.max == 5.0
    assert E.resolve_value("max", 0, ref) == 5.0 and E.resolve_value("1.5max", 0, ref) == 7.5
    assert E.resolve_value("0.5*max", 1, ref) == 2.5 and E.resolve_value("q0.5", 1, ref) == 3.0
    assert E.resolve_value("0.25", 0, None) == 0.25
    with pytest.raises(ValueError, match="q0.95"):
        E.resolve_value("qx", 0, ref)
    ops = E.parse_edit("1=max, 0*2,p1+0.5", 2)
    assert [str(o) for o in ops] == ["p1=max", "p0*2", "p1+0.5"]
    s = E.apply_ops(torch.tensor([[1.0, 1.0]]), ops, ref)
    assert s.tolist() == [[2.0, 5.5]]
    for bad in ("5=max", "x=1", "3"):
        with pytest.raises(ValueError):
            E.parse_edit(bad, 2)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    assert torch.equal(E.slerp(a, b, 0.0), a) and torch.equal(E.slerp(a, b, 1.0), b)
    unit = lambda v: v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # noqa: E731
    a, b = unit(a), unit(b)
    mid = E.slerp(a, b, 0.5)  # on the great circle: unit norm, equal angles to both ends
    assert torch.allclose(mid.flatten(1).norm(dim=1), torch.ones(2), atol=1e-5)
    cos = lambda u, v: torch.nn.functional.cosine_similarity(u.flatten(1), v.flatten(1))  # noqa: E731
    assert torch.allclose(cos(mid, a), cos(mid, b), atol=1e-5)
    assert half_rise_timestep(np.array([900, 500, 100]), np.array([0.1, 0.6, 1.0])) == 500


# ------------------------------------------------------------------------------ components
def test_nearest_patches_are_exactly_the_nearest_features(pat):
    near = nearest_patches(pat, list(range(pat.num_prototypes)), k=3, n_images=0, split="train")
    ds = pat.dataset("train")
    net = pat.model.prototypes
    with torch.no_grad():
        z = net.encoder(ds.get_batch(list(range(len(ds)))))  # (N, D, H, W)
    feats = z.permute(0, 2, 3, 1)  # (N, H, W, D)
    for r, j in enumerate(near.prototypes):
        d_all = ((feats - net.prototypes[j]) ** 2).sum(-1)  # (N, H, W) brute force
        per_image = d_all.flatten(1).min(1).values
        expect = per_image.topk(3, largest=False)
        assert torch.allclose(near.distance[r], expect.values, rtol=1e-4, atol=1e-5)
        for m in range(3):
            i, (h, w) = int(near.index[r, m]), near.location[r, m].tolist()
            assert torch.isclose(d_all[i, h, w], near.distance[r, m], rtol=1e-4, atol=1e-5)
            assert tuple(near.boxes[r, m].tolist()) == pat.receptive_field.box(h, w)


def test_interpolation_endpoints_reproduce_the_reconstructions(pat):
    x = pat.load_images(indices=[3, 7])
    inv = E.invert_images(pat, x, steps=4)
    res = run_plan(pat, EditPlan(images=inv.x0, alphas=[0.0, 0.5, 1.0], steps=4, inverted=inv))
    imgs, s = res.path, res.s_path_requested
    rec = pat.decode(inv.x_T, inv.s, steps=4).clamp(-1, 1)
    assert torch.equal(s[0], inv.s[0]) and torch.equal(s[2], inv.s[1])
    # equal up to float32 batch-size effects (~1e-5), far below the change along the path
    assert torch.allclose(imgs[0], rec[0], atol=1e-3) and torch.allclose(imgs[2], rec[1], atol=1e-3)
    assert (imgs[1] - rec[0]).abs().max() > 0.1 and (imgs[1] - rec[1]).abs().max() > 0.1


def test_batched_edits_do_not_depend_on_chunking_and_emergence_traces_match(pat):
    x = pat.load_images(indices=[0, 1, 2])
    inv = E.invert_images(pat, x, steps=3)
    ref = E.reference_set(pat, n=16, seed=0)
    s_list = torch.stack([E.edit_s(inv.s, [j], ref.max) for j in (0, 1)])
    plan = EditPlan(images=inv.x0, edits=[Edit.replace(s_list[k], [j], f"p{j}=max") for k, j in enumerate((0, 1))],
                    steps=3, inverted=inv)
    pat.batch_size = 64
    one = run_plan(pat, plan)
    em_one = trace_emergence(pat, inv, [0, 1], ref, "max", steps=3)
    pat.batch_size = 2  # several decode chunks: the callback must stitch them back in order
    try:
        many = run_plan(pat, plan)
        em_many = trace_emergence(pat, inv, [0, 1], ref, "max", steps=3)
    finally:
        pat.batch_size = 64
    assert torch.allclose(one.images, many.images, atol=1e-3) and torch.allclose(one.s_after, many.s_after, atol=1e-3)
    assert em_one.s_traj.shape == (3, 3, 3, pat.num_prototypes) and list(em_one.t) == sorted(em_one.t, reverse=True)
    assert torch.allclose(em_one.s_traj, em_many.s_traj, atol=1e-3)
    # the last predicted x0 is the decoded image: its s is the re-encoded edit result
    assert torch.allclose(em_one.s_traj[-1, 1:], one.s_after, atol=1e-3)
    assert torch.allclose(em_one.final[1:], one.images, atol=1e-3)


def test_explain_gallery_writes_consistent_results(pat, tmp_path):
    res = explain_gallery(pat, tmp_path, prototypes=[0, 2], n_ref=16, seed=0, steps=3, progress=False,
                          n_images=3, k_nearest=2, patch_images=0, stats_images=0)
    ref = E.reference_set(pat, n=16, seed=0)
    assert res.reference.max == pytest.approx(ref.max, abs=1e-5)
    for f in ("overview.png", "prototypes/p00.png", "prototypes/p02.png", "enhanced.png", "prototypes.csv"):
        assert (tmp_path / f).stat().st_size > 0, f
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert [r["prototype"] for r in saved["per_prototype"]] == [0, 2]
    for r in saved["per_prototype"]:
        best = r["best_image"]
        assert best["s_after"] == max(r["s_after"])
        assert tuple(best["box"]) == pat.receptive_field.box(*best["location"])
        assert len(r["nearest_patches"]) == 2 and len(r["faithfulness"]["rise"]) == 3
        assert sum(1 for _ in r["s_quantiles"]) == 5
    tops = sum(r["top_fraction"] for r in saved["per_prototype"])
    assert 0 <= tops <= 1
    assert len((tmp_path / "prototypes.csv").read_text().splitlines()) == 3


# ------------------------------------------------------------------------------ commands end to end
def test_every_command_end_to_end(tiny_run, tmp_path):
    run = str(tiny_run)
    common = ["--run", run, "--steps", "3", "--no-progress", "--ref-n", "16"]

    def cli(*args):
        assert main([*map(str, args)]) == 0, args

    cli("explain", *common, "--n-images", 2, "--k-nearest", 2, "--patch-images", 32, "--stats-images", 16,
        "--prototypes", "0,1", "--out", tmp_path / "ex")
    assert json.loads((tmp_path / "ex" / "explain.json").read_text())["faithfulness"]["others_median"] is not None
    cli("where", *common, "--indices", "0,1", "--top-k", 2, "--display-size", 64, "--out", tmp_path / "wh")
    wh = json.loads((tmp_path / "wh" / "where.json").read_text())
    assert len(wh["matches"]) == 4 and all(0 <= v <= 64 for m in wh["matches"] for v in m["box"])
    assert np.load(tmp_path / "wh" / "maps.npz")["maps"].shape == (2, 2, 64, 64)
    cli("when", *common, "--n", 2, "--prototypes", "1", "--out", tmp_path / "wn")
    rows = (tmp_path / "wn" / "when.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("prototype,step,t,gain_vs_unedited_mean")
    cli("edit", *common, "--n", 2, "--edit", "1=max", "--edit", "0=q0.5,2*2", "--out", tmp_path / "ed")
    ed = json.loads((tmp_path / "ed" / "edits.json").read_text())
    assert [e["edit"] for e in ed["edits"]] == ["1=max", "0=q0.5,2*2"] and "max_s_X" in ed["reference"]
    for e in ed["edits"]:
        assert {"rise_median", "others_median", "rise", "others"} <= set(e["faithfulness"])
        assert len(e["faithfulness"]["others"]) == 2
    cli("extrapolate", *common, "--indices", "5", "--prototypes", "0,1", "--values", "0,max", "--out", tmp_path / "xp")
    assert len(json.loads((tmp_path / "xp" / "extrapolate.json").read_text())["sweep"]) == 4
    cli("interpolate", *common, "--indices", "2,9", "--alphas", 4, "--out", tmp_path / "ip")
    ip = json.loads((tmp_path / "ip" / "interpolate.json").read_text())
    assert max(ip["endpoint_max_abs_diff_to_reconstruction"]) < 1e-3 and len(ip["s_reached"]) == 4
    cli("consistency", *common, "--n", 3, "--prototypes", "2", "--out", tmp_path / "cs")
    assert len(json.loads((tmp_path / "cs" / "consistency.json").read_text())["prototypes"][0]["boxes"]) == 3
    cli("variations", *common, "--n", 2, "--k", 2, "--out", tmp_path / "vr")
    vr = json.loads((tmp_path / "vr" / "variations.json").read_text())
    assert len(vr["variation_mean_abs_s_change"]) == 2
    for d, f in (("ex", "overview.png"), ("wh", "where.png"), ("wn", "when.png"), ("ed", "edit.png"),
                 ("xp", "extrapolate.png"), ("ip", "interpolate.png"), ("cs", "consistency.png"),
                 ("vr", "variations.png")):
        assert (tmp_path / d / f).stat().st_size > 1000, f


def test_commands_fail_with_one_line_errors(tiny_run, tmp_path, capsys):
    base = ["--run", str(tiny_run), "--steps", "2", "--no-progress", "--out", str(tmp_path / "e")]
    assert main(["interpolate", *base, "--indices", "1,2,3"]) == 2
    assert "exactly two images" in capsys.readouterr().err
    assert main(["edit", *base, "--n", "1", "--edit", "99=max"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["extrapolate", *base, "--prototypes", "0", "--values", "0,maxx"]) == 2
    assert "1.5max" in capsys.readouterr().err
