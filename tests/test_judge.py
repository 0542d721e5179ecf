"""The independent judge classifier and the class-agreement measure built on it."""

import torch

from patronus_diffusion.evaluation.judge import Judge, JudgeSettings, get_judge


def test_judge_learns_the_synthetic_classes_and_is_cached(tiny_cfg, tmp_path):
    settings = JudgeSettings(epochs=3, batch_size=16)
    j = get_judge(tiny_cfg.data, settings, cache_dir=tmp_path, progress=False)
    assert not j.meta["from_cache"] and j.meta["num_classes"] == 2
    assert j.meta["test_accuracy"] >= 0.9  # horizontal vs vertical bars
    again = get_judge(tiny_cfg.data, settings, cache_dir=tmp_path, progress=False)
    assert again.meta["from_cache"]
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    assert torch.equal(j.predict(x), again.predict(x))


def test_the_fashion_mnist_judge_ships_with_the_package(tmp_path, monkeypatch):
    """Every machine scores with the same judge: with an empty cache it is loaded from the package, not trained."""
    from patronus_diffusion.evaluation.judge import SHIPPED_JUDGES, judge_files
    from patronus_diffusion.presets import get_preset

    monkeypatch.setenv("PATRONUS_CACHE", str(tmp_path))
    data = get_preset("cpu-small").data
    weights, _ = judge_files(data)
    assert (SHIPPED_JUDGES / weights.name).exists(), "re-ship the judge after changing its key or settings"
    j = get_judge(data, progress=False)
    assert j.meta["shipped"] and j.meta["from_cache"] and j.meta["test_accuracy"] > 0.85
    assert not (tmp_path / "judge").exists()  # nothing trained, nothing written
    assert j.meta["class_names"][6] == "Shirt"


class _FixedJudge(Judge):
    """Answers from a rule instead of a network: lets the bookkeeping be checked in closed form."""

    def __init__(self, rule):
        self.rule, self.meta = rule, {"num_classes": 2, "test_accuracy": 1.0}

    def predict(self, images, batch_size=512):
        return self.rule(images)


def test_class_agreement_counts_matches_with_the_source_label(tiny_run):
    from patronus_diffusion import Patronus
    from patronus_diffusion.evaluation.generation import class_agreement, conditional_s

    pat = Patronus.load(tiny_run, device="cpu")
    n, k = 6, 2
    _, names = conditional_s(pat, n, 0)
    labels = torch.as_tensor(pat.dataset("test").labels)[[int(x.split(":")[1]) for x in names]]
    zero = class_agreement(pat, _FixedJudge(lambda x: torch.zeros(x.shape[0], dtype=torch.long)), n=n, k=k, steps=2)
    assert abs(zero["agreement"] - float((labels == 0).float().mean())) < 1e-4  # reported to 4 decimals
    assert zero["pixel_spread_grey_levels"]["same_s_other_noise"] > 0
    assert zero["n_images"] == n and zero["per_image"] == k
    per_image = (labels == 0).float()  # this judge agrees with every generation of a class-0 source, no other
    # no column effect here (a constant per source), so the two-way standard error is the one over images
    assert abs(zero["agreement_standard_error"] - float(per_image.std()) / n ** 0.5) < 1e-4
    assert zero["agreement_standard_error_images_only"] == zero["agreement_standard_error"]
    # the diagnostics: a judge that always answers 0 agrees with its own reading of every source, is right on the
    # sources of class 0 only, and puts every generation in column 0 of the confusion matrix
    assert zero["agreement_with_judged_source"] == 1.0
    assert abs(zero["judge_on_sources"] - float((labels == 0).float().mean())) < 1e-4
    conf = torch.tensor(zero["confusion"])
    assert conf.sum() == n * k and conf[:, 0].sum() == n * k
    assert conf[1, 0] == k * int((labels == 1).sum())
    for c, row in zero["per_class"].items():
        assert row["agreement"] == (1.0 if c == "0" else 0.0) and row["images"] == int((labels == int(c)).sum())
    # a judge that reads the image: its accuracy on the sources is checked against the source images themselves
    sources = pat.dataset("test").get_batch([int(x.split(":")[1]) for x in names])
    cut = float(sources.mean(dim=(1, 2, 3)).median())
    rule = lambda x: (x.mean(dim=(1, 2, 3)) > cut).long()  # noqa: E731
    read = class_agreement(pat, _FixedJudge(rule), n=n, k=k, steps=2)
    assert abs(read["judge_on_sources"] - float((rule(sources) == labels).float().mean())) < 1e-4
    conf = torch.tensor(read["confusion"])
    assert conf.sum(1).tolist() == [k * int((labels == c).sum()) for c in range(2)]  # rows: source labels
    assert abs(read["agreement"] - float(conf.diag().sum()) / (n * k)) < 1e-4
