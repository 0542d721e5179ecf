"""One result convention (analysis/results.py): every analysis result has a one-line repr of at most 200
characters, a text summary(), write(out) that writes its files and returns them, to_pil() (its main figure) and
_repr_png_() (PNG bytes, so a notebook shows it). Each result is built as cheaply as its analysis allows: the tiny
trained run at 2 steps, synthetic similarities for the quality report, the planted data's closed-form decoder for
the diagnosis and the scans."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import SIZE, fitted_model, write_planted
from patronus_diffusion import Patronus
from patronus_diffusion.analysis.results import one_line

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pat(tiny_run):
    return Patronus.load(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def images(pat):
    return pat.load_images(indices=[0, 1]), ["test:0", "test:1"]


@pytest.fixture(scope="module")
def ref(pat):
    from patronus_diffusion.edit import reference_set

    return reference_set(pat, n=16, seed=0)


def _explain(pat, images, ref):
    from patronus_diffusion.analysis.explain import build_gallery

    return build_gallery(pat, [0, 1], n_ref=16, steps=2, progress=False, n_images=2, k_nearest=2, patch_images=32,
                         stats_images=16)


def _where(pat, images, ref):
    from patronus_diffusion.analysis.where import where_report

    return where_report(pat, images[0], images[1], top_k=2)


def _when(pat, images, ref):
    from patronus_diffusion.analysis.when import run_when
    from patronus_diffusion.edit import EditPlan

    return run_when(pat, EditPlan.emergence(images[0], [0], "max", ref, steps=2, names=images[1]))


def _quality(pat, images, ref):
    from patronus_diffusion.analysis import quality as Q

    rng = np.random.default_rng(0)
    labels, attr = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    s = rng.normal(size=(60, 4)) + 2 * attr[:, None] * np.array([1, 0, 0, 0])
    enc = Q.Encoded(s, labels, ("a", "b"), attr[:, None].astype(float), ("Smiling",))
    return Q.quality_report(enc, rng.normal(size=(4, 8)), folds=3, progress=False)


def _evaluate_edits(pat, images, ref):
    from patronus_diffusion.analysis.evaluate_edits import EvaluationPlan, evaluate_edits

    return evaluate_edits(pat, EvaluationPlan(images=images[0], reference=ref, prototypes=[0, 1], strengths=[1.0],
                                              names=images[1], steps=2, kinds=("own_max",), edit_guidance=0.0))


def _report(pat, images, ref):
    from patronus_diffusion.analysis.report import build_report

    return build_report(pat, quick=True, progress=False, budget={"steps": 2, "patch_images": 32, "stats_images": 16,
                                                                  "quality_limit": 64, "strengths": [1.0]})


def _edit_analysis(kind):
    def build(pat, images, ref):
        from patronus_diffusion.analysis import edits as A
        from patronus_diffusion.edit import EditPlan

        x, names = images
        common = dict(names=names, steps=2)
        if kind == "edit":
            return A.run_edit(pat, EditPlan.edit(x, ["0=max", "1=0"], pat.num_prototypes, ref, **common))
        if kind == "extrapolate":
            return A.run_extrapolate(pat, EditPlan.sweep(x, [0], ["0", "max"], ref, **common))
        if kind == "consistency":
            return A.run_consistency(pat, EditPlan.consistency(x, [1], "max", ref, **common))
        if kind == "interpolate":
            return A.run_interpolate(pat, EditPlan.interpolation(x, 3, **common))
        return A.run_variations(pat, EditPlan.noise_variations(x, 2, **common))

    return build


@pytest.fixture(scope="module")
def planted(tmp_path_factory, _tiny_cfg_master):
    """The closed-form decoder of the planted data (mark tied to the vertical bar) and its clean data."""
    from patronus_diffusion.config import DataConfig

    root = tmp_path_factory.mktemp("planted")
    clean = write_planted(root / "unbiased", 0.0)
    write_planted(root / "biased", 1.0)
    cfg = DataConfig(dataset="folder", root=str(clean), image_size=SIZE, channels=1,
                     attributes_csv=str(clean / "attributes.csv"))
    return fitted_model(root / "biased", _tiny_cfg_master.copy()), cfg


KW = dict(n_images=4, seeds=1, top_k=1, steps=3, probe_epochs=2, progress=False)


def _diagnosis(planted):
    from patronus_diffusion.analysis.shortcut import diagnose

    return diagnose(planted[0], "vertical", "mark", planted[1], **KW)


def _scan_shared(planted):
    from patronus_diffusion.analysis.scan import scan_shared

    return scan_shared(planted[0], ["vertical", "mark"], planted[1], **KW)


def _scan_pairs(planted):
    from patronus_diffusion.analysis.scan import scan_pairs

    return scan_pairs(planted[0], ["vertical", "mark"], planted[1], **KW)


ON_THE_RUN = {"explain": _explain, "where": _where, "when": _when, "quality": _quality,
              "evaluate-edits": _evaluate_edits, "report": _report,
              **{k: _edit_analysis(k) for k in ("edit", "extrapolate", "consistency", "interpolate", "variations")}}
ON_PLANTED = {"diagnose": _diagnosis, "scan shared": _scan_shared, "scan pairwise": _scan_pairs}
NAMES = {"explain": "ExplainResult", "where": "WhereResult", "when": "WhenResult", "quality": "QualityResult",
         "evaluate-edits": "EditEvaluation", "report": "ModelReport", "edit": "EditsResult", "extrapolate": "ExtrapolationResult",
         "consistency": "ConsistencyResult", "interpolate": "InterpolationResult", "variations": "VariationsResult",
         "diagnose": "DiagnosisResult", "scan shared": "ScanResult", "scan pairwise": "ScanResult"}


def check_convention(result, name: str, out: Path) -> dict:
    text = repr(result)
    assert type(result).__name__ == name
    assert text.startswith(name + "(") and len(text) <= 200 and "\n" not in text and "tensor" not in text, text
    summary = result.summary()
    assert isinstance(summary, str) and summary.strip(), summary
    files = result.write(out)
    assert files and all(Path(p).exists() for p in files.values()), files
    assert all(Path(p).is_relative_to(out) for p in files.values()), files
    assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"
    img = result.to_pil()
    assert isinstance(img, Image.Image) and min(img.size) > 16, img
    assert result._repr_png_().startswith(PNG)
    return files


@pytest.mark.parametrize("kind", list(ON_THE_RUN))
def test_every_analysis_result_follows_the_convention(kind, pat, images, ref, tmp_path):
    check_convention(ON_THE_RUN[kind](pat, images, ref), NAMES[kind], tmp_path / "out")


@pytest.mark.parametrize("kind", list(ON_PLANTED))
def test_the_diagnosis_and_the_scans_follow_the_convention(kind, planted, tmp_path):
    result = ON_PLANTED[kind](planted)
    files = check_convention(result, NAMES[kind], tmp_path / "out")
    if kind == "diagnose":
        assert set(files) == {"diagnosis.json", "effects.csv", "rankings.csv", "diagnosis.png"}
        assert "per_image" in result.report and "per_image" not in result.to_json()
        assert not any(k.startswith("_") for k in result.report)  # no private keys: the figure's data is its own
    else:
        assert set(files) == ({"ranking", "table", "directions"} if kind == "scan shared" else {"ranking", "table"})
        assert result.report["mode"] == kind.split()[1] and result.pairs is result.report["pairs"]


def test_one_line_collapses_whitespace_and_clips_at_200():
    assert one_line("A(1\n  2)") == "A(1 2)"
    long = one_line("B(" + "x" * 300 + ")")
    assert len(long) == 200 and long.endswith("...)")
