"""End-to-end CLI runs on a tiny configuration, --help of every command, and error exits."""

import json
import subprocess
import sys

import pytest
import torch

from patronus_diffusion.cli.main import build_parser, main


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "patronus_diffusion.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("train", "sample", "reconstruct", "bench", "demo", "presets"):
        assert name in commands
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: patronus" in capsys.readouterr().out


def test_no_help_text_shows_a_doubled_percent_sign():
    """argparse %-formats option help but not descriptions: a "%%" written into a description prints as is."""
    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, __import__("argparse")._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    parsers = list(walk(build_parser()))
    assert any(p.prog.endswith("protodiff compare") for p in parsers)  # nested commands are walked too
    for parser in parsers:
        assert "%%" not in parser.format_help(), parser.prog


def test_help_states_each_default_once_and_never_none():
    """Every option's help shows at most one "default" and never "(default: None)" (the formatter used to add
    argparse's own after help texts that already named theirs)."""
    import argparse

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert sub.formatter_class.__name__ == "_DefaultsFormatter", name
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            text = formatter._get_help_string(action) % {**vars(action), "prog": sub.prog}
            assert "(default: None)" not in text and text.lower().count("default") <= 1, (name, action.dest, text)


def test_train_sample_reconstruct_end_to_end(idx_root, tmp_path):
    run = tmp_path / "run"
    out = run_cli("train", "--preset", "tiny", "--data-root", idx_root, "--set", "data.limit=none",
                  "train.sample_every=6", "--steps", 12, "--out", run, "--no-progress")
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 12
    for f in ("config.json", "latest.json", "model.safetensors", "train_log.csv", "train_summary.json",
              "samples/reference.png", "samples/step_000012.png"):
        assert (run / f).exists(), f
    # resume continues to a larger total
    out = run_cli("train", "--preset", "tiny", "--data-root", idx_root, "--set", "data.limit=none",
                  "--steps", 16, "--out", run, "--resume", "--no-progress")
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 16

    run_cli("sample", "--run", run, "--n", 3, "--steps", 3, "--out", tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert meta["n_images"] == 3 and meta["sampler"] == "dpmpp-2m"
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 3
    s_rows = (tmp_path / "s" / "s.csv").read_text().splitlines()
    assert len(s_rows) == 4 and s_rows[0].startswith("source,s0")

    import numpy as np

    np.save(tmp_path / "s.npy", np.ones((2, 6), np.float32))
    run_cli("sample", "--run", run, "--s-file", tmp_path / "s.npy", "--per-s", 2, "--steps", 2,
            "--sampler", "ddim", "--out", tmp_path / "s2")
    assert json.loads((tmp_path / "s2" / "sample.json").read_text())["n_images"] == 4

    run_cli("reconstruct", "--run", run, "--indices", "0,1", "--steps", "3,6", "--out", tmp_path / "r")
    rec = json.loads((tmp_path / "r" / "reconstruct.json").read_text())
    assert set(rec["by_steps"]) == {"3", "6"}
    assert len((tmp_path / "r" / "reconstruct.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("preset", ["tiny", "protodiff-tiny"])
def test_bench_prints_json(preset):
    """Every preset --preset offers benches, the ProtoDiffusion ones included (they condition on a class table)."""
    out = run_cli("bench", "--preset", preset, "--iters", 1, "--invert-steps", 2, "--forward-batch", 4)
    res = json.loads(out.stdout)
    for k in ("train_images_per_s", "unet_forward_images_per_s", "invert_decode_one_image_s", "peak_memory_mb"):
        assert res[k] > 0


def test_presets_lists_and_shows():
    out = run_cli("presets")
    assert "paper-fmnist" in out.stdout and "cpu-small" in out.stdout
    cfg = json.loads(run_cli("presets", "--show", "paper-fmnist").stdout)
    assert cfg["train"]["lr"] == 1e-5 and cfg["prototypes"]["num_prototypes"] == 30


def test_demo_preset_is_cpu_small_with_ten_prototypes():
    import inspect

    from patronus_diffusion.experiments.demo import run_demo
    from patronus_diffusion.presets import get_preset

    demo, small = get_preset("cpu-demo").to_dict(), get_preset("cpu-small").to_dict()
    assert demo["prototypes"].pop("num_prototypes") == 10 and small["prototypes"].pop("num_prototypes") == 30
    demo.pop("preset"), small.pop("preset")
    assert demo == small  # nothing else differs
    assert inspect.signature(run_demo).parameters["preset"].default == "cpu-demo"
    assert "cpu-demo" in run_cli("demo", "--help").stdout


def test_errors_are_one_line_and_exit_2(tmp_path, tiny_run):
    p = run_cli("sample", "--run", tmp_path / "missing", check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("train", "--preset", "tiny", "--out", tmp_path / "x", "--set", "unet.nope=1", "--steps", 1,
                check=False)
    assert p.returncode == 2 and "unknown config key" in p.stderr
    p = run_cli("sample", "--run", tiny_run, "--indices", "a,b", check=False)
    assert p.returncode == 2 and "--indices" in p.stderr
    # a damaged checkpoint is named, not loaded
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    latest = json.loads((bad / "latest.json").read_text())["checkpoint"]
    (bad / latest / "ema.safetensors").write_bytes(b"\0" * 64)
    p = run_cli("reconstruct", "--run", bad, "--n", 1, "--steps", 2, check=False)
    assert p.returncode == 2 and "damaged" in p.stderr and "ema.safetensors" in p.stderr


def test_export_bundle_loads_like_the_run(tiny_run, tmp_path):
    from patronus_diffusion import Patronus

    out = tmp_path / "bundle"
    run_cli("export", "--run", tiny_run, "--out", out)
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    a, b = Patronus.load(tiny_run), Patronus.load(out)
    x = a.load_images(indices=[0, 1])
    assert torch.equal(a.encode(x).s, b.encode(x).s)
    t = torch.full((2,), 500)
    s = a.encode(x).s
    assert torch.equal(a.model(x, t, s), b.model(x, t, s))


@pytest.mark.slow
def test_demo_writes_what_the_readme_says(idx_root, tmp_path):
    out = tmp_path / "demo"
    p = run_cli("demo", "--out", out, "--preset", "tiny", "--steps", 6, "--n", 2, "--gallery-images", 1,
                "--edit-images", 2,
                "--no-reports",  # the report has its own test; the shipped model's would take minutes here
                "--set", f"data.root={idx_root}", "data.limit=none", "train.sample_every=0")
    for name in ("generated_from_test_s.png", "reconstructions.png", "reconstruct.csv", "reconstruct.json",
                 "summary.json", "explain/overview.png", "explain/explain.json", "explain/prototypes.csv"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["reconstruction_psnr_db"]) == {"50", "100"}
    assert summary["train_steps"] > 0 and summary["wall_minutes"] > 0
    assert summary["train_steps_this_run"] == summary["train_steps"] == 6  # a step budget, whatever the machine
    assert summary["train_images_per_s_this_run"] > 0  # the demo reports its own speed (the README points here)
    assert "rise_median" in summary["gallery"]["edit_faithfulness"]
    assert (out / "edits_eval" / "edits_eval.png").is_file()  # the demo measures its own edits
    ev = json.loads((out / "edits_eval" / "edits_eval.json").read_text())
    assert summary["edits_eval"]["median_rise"] == ev["median_rise"] and ev["settings"]["n_images"] == 2
    assert str(out) in p.stdout and "for 6 steps (to step 6" in p.stdout
    # a second demo continues the run by the same number of steps
    run_cli("demo", "--out", out, "--preset", "tiny", "--steps", 6, "--n", 2, "--gallery-images", 0,
            "--edit-images", 0, "--no-reports", "--set", f"data.root={idx_root}", "data.limit=none",
            "train.sample_every=0")
    again = json.loads((out / "summary.json").read_text())
    assert again["train_steps"] == 12 and again["train_steps_this_run"] == 6


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    """A bad argument exits 2 with one line; an unexpected exception (a bug) propagates with a hint."""
    import pytest

    from patronus_diffusion.cli import core, main as cli_main

    assert cli_main.main(["reconstruct", "--run", "pretrained:fashion-mnist", "--steps", "5,x",
                          "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "comma-separated integers" in err

    def boom(args):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(core, "cmd_presets", boom)
    with pytest.raises(ValueError, match="internal mistake"):
        cli_main.main(["presets"])
    assert "bug in patronus-diffusion" in capsys.readouterr().err


def test_values_a_user_chose_are_user_errors_not_bugs(idx_root, tmp_path, capsys):
    """Errors the user can fix by changing an argument exit 2 with one line, wherever in the stack they arise
    (they used to be plain ValueErrors, reported as bugs with a traceback)."""
    import pytest

    from patronus_diffusion.cli.main import main
    from patronus_diffusion.config import apply_overrides
    from patronus_diffusion.data.biased import cell_proportions
    from patronus_diffusion.models import build_model
    from patronus_diffusion.presets import get_preset
    from patronus_diffusion.utils.errors import UserError

    assert main(["make-biased", "--demo", "--correlation", "1.5", "--n-train", "8", "--n-test", "4",
                 "--data-root", str(idx_root), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "impossible" in err and "bug" not in err
    assert main(["make-biased", "--demo", "--n-train", "4000", "--data-root", str(idx_root),
                 "--out", str(tmp_path / "b")]) == 2  # the small test IDX set lacks the demo classes
    assert "too few train images" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--steps", "1", "--no-progress", "--data-root", str(idx_root),
                 "--set", "data.image_size=2", "--out", str(tmp_path / "r")]) == 2
    assert "bug" not in capsys.readouterr().err
    with pytest.raises(UserError, match="larger image"):
        build_model(apply_overrides(get_preset("tiny"), ["data.image_size=2"]))
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        cell_proportions(0.0, p_a=1.0)
    with pytest.raises(UserError, match="cond_mode"):
        build_model(apply_overrides(get_preset("tiny"), ["unet.cond_mode=sideways"]))


def test_resume_of_a_missing_run_fails_and_resume_if_present_starts_one(idx_root, tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    base = ["train", "--preset", "tiny", "--steps", "2", "--no-progress", "--data-root", str(idx_root),
            "--set", "data.limit=none", "train.sample_every=0", "train.checkpoint_every=0"]
    assert main(base + ["--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err and not (tmp_path / "typo" / "latest.json").exists()
    assert main(base + ["--out", str(tmp_path / "new"), "--resume-if-present"]) == 0
    assert (tmp_path / "new" / "latest.json").exists()
    capsys.readouterr()
    more = [("--steps" if a == "--steps" else a) for a in base]
    more[more.index("--steps") + 1] = "3"
    assert main(more + ["--out", str(tmp_path / "new"), "--resume"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 3 and line["steps_this_invocation"] == 1 and "minutes_this_invocation" in line
    summary = json.loads((tmp_path / "new" / "train_summary.json").read_text())
    assert summary["step"] == 3 and summary["steps_this_invocation"] == 1
