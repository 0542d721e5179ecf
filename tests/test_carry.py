"""scripts/carry_run.py: carrying a run, or a tree of runs (protodiff compare), across sessions."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "carry_run.py"
spec = importlib.util.spec_from_file_location("carry_run", SCRIPT)
carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry)


def make_run(run: Path, steps: list[int], log: str = "step\n") -> None:
    for step in steps:
        ck = run / "checkpoints" / f"step_{step:06d}"
        ck.mkdir(parents=True)
        (ck / "model.safetensors").write_bytes(bytes([step % 256]) * 64)
        (ck / "state.json").write_text(json.dumps({"step": step}))
    (run / "config.json").write_text("{}")
    (run / "train_log.csv").write_text(log)
    (run / "latest.json").write_text(json.dumps({"checkpoint": f"checkpoints/step_{steps[-1]:06d}",
                                                 "step": steps[-1]}))


def make_compare_tree(root: Path) -> None:
    make_run(root / "runs" / "regular" / "seed0", [10, 20])
    make_run(root / "runs" / "proto-frozen" / "seed0", [10])
    (root / "evals").mkdir(parents=True)
    (root / "evals" / "regular_seed0_step000010.json").write_text('{"fid": 50}')
    (root / "classifier").mkdir()
    (root / "classifier" / "prototypes.safetensors").write_bytes(b"p" * 32)
    (root / "cache" / "judge").mkdir(parents=True)
    (root / "cache" / "judge" / "fashion-mnist-28px-abc.safetensors").write_bytes(b"j" * 32)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_save_a_single_run_keeps_only_the_pointed_checkpoint(tmp_path):
    make_run(tmp_path / "run", [250, 500])
    r = carry.save(tmp_path / "run", tmp_path / "carried")
    assert r["runs"] == {".": 500}
    assert files(tmp_path / "carried") == {"config.json", "train_log.csv", "latest.json",
                                           "checkpoints/step_000500/model.safetensors",
                                           "checkpoints/step_000500/state.json"}
    carry.restore(tmp_path / "carried", tmp_path / "back")
    assert files(tmp_path / "back") == files(tmp_path / "carried")
    assert json.loads((tmp_path / "back" / "latest.json").read_text())["step"] == 500


def test_save_and_restore_a_compare_tree(tmp_path):
    make_compare_tree(tmp_path / "cmp")
    r = carry.save(tmp_path / "cmp", tmp_path / "carried")
    assert r["runs"] == {"runs/proto-frozen/seed0": 10, "runs/regular/seed0": 20}
    carried = files(tmp_path / "carried")
    assert "runs/regular/seed0/checkpoints/step_000010/model.safetensors" not in carried  # older checkpoint
    assert {"evals/regular_seed0_step000010.json", "classifier/prototypes.safetensors",
            "cache/judge/fashion-mnist-28px-abc.safetensors",
            "runs/regular/seed0/checkpoints/step_000020/state.json"} <= carried
    r = carry.restore(tmp_path / "carried", tmp_path / "back")
    assert r["restored"] == {"runs/proto-frozen/seed0": 10, "runs/regular/seed0": 20}
    assert files(tmp_path / "back") == carried
    assert (tmp_path / "back" / "cache/judge/fashion-mnist-28px-abc.safetensors").read_bytes() == b"j" * 32


def test_restore_never_moves_a_run_backwards_nor_overwrites_newer_results(tmp_path):
    make_compare_tree(tmp_path / "cmp")
    carry.save(tmp_path / "cmp", tmp_path / "carried")
    back = tmp_path / "back"
    carry.restore(tmp_path / "carried", back)
    # the destination moves on: one run trains further, an evaluation is rewritten, a new one is added
    ahead = back / "runs" / "regular" / "seed0"
    (ahead / "checkpoints" / "step_000030").mkdir()
    (ahead / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step_000030", "step": 30}))
    (ahead / "train_log.csv").write_text("step\n30\n")
    (back / "evals" / "regular_seed0_step000010.json").write_text('{"fid": 49}')
    behind = back / "runs" / "proto-frozen" / "seed0"
    (behind / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step_000005", "step": 5}))
    (behind / "train_log.csv").write_text("older")
    r = carry.restore(tmp_path / "carried", back)
    assert r["kept"] == {"runs/regular/seed0": 30} and r["restored"] == {"runs/proto-frozen/seed0": 10}
    assert (ahead / "train_log.csv").read_text() == "step\n30\n"
    assert json.loads((ahead / "latest.json").read_text())["step"] == 30
    assert (back / "evals" / "regular_seed0_step000010.json").read_text() == '{"fid": 49}'
    assert (behind / "train_log.csv").read_text() == "step\n"  # a run behind the carry is brought forward whole


def test_a_failed_save_leaves_the_previous_carry_whole(tmp_path):
    make_run(tmp_path / "run", [10])
    carry.save(tmp_path / "run", tmp_path / "carried")
    before = files(tmp_path / "carried")
    (tmp_path / "run" / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step_000099", "step": 99}))
    with pytest.raises(carry.CarryError, match="step_000099, which is missing"):
        carry.save(tmp_path / "run", tmp_path / "carried")
    assert files(tmp_path / "carried") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-carry")]


def test_cli_says_what_is_wrong_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["save", str(tmp_path / "empty"), str(tmp_path / "c")],
                 ["restore", str(tmp_path / "nothing"), str(tmp_path / "d")]):
        p = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.startswith("carry_run: ") and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_restore_checks_every_checkpoint_first_and_keeps_a_root_run_that_is_ahead(tmp_path):
    make_run(tmp_path / "run", [10])
    carry.save(tmp_path / "run", tmp_path / "carried")
    make_run(tmp_path / "ahead", [10, 20], log="ahead")
    r = carry.restore(tmp_path / "carried", tmp_path / "ahead")
    assert r["kept"] == {".": 20} and (tmp_path / "ahead" / "train_log.csv").read_text() == "ahead"
    # a carried pointer whose checkpoint is gone: refused before anything is written
    import shutil
    shutil.rmtree(tmp_path / "carried" / "checkpoints" / "step_000010")
    make_run(tmp_path / "behind", [5], log="behind")
    with pytest.raises(carry.CarryError, match="missing; nothing was restored"):
        carry.restore(tmp_path / "carried", tmp_path / "behind")
    assert (tmp_path / "behind" / "train_log.csv").read_text() == "behind"


@pytest.mark.parametrize("checkpoint", ["../elsewhere", "/tmp/abs", ""])
def test_a_pointer_outside_the_run_is_refused(tmp_path, checkpoint):
    make_run(tmp_path / "run", [10])
    (tmp_path / "run" / "latest.json").write_text(json.dumps({"checkpoint": checkpoint, "step": 10}))
    with pytest.raises(carry.CarryError, match="not a folder inside the run"):
        carry.save(tmp_path / "run", tmp_path / "carried")


def test_the_destination_may_not_lie_inside_the_source(tmp_path):
    make_run(tmp_path / "run", [10])
    with pytest.raises(carry.CarryError, match="lies inside"):
        carry.save(tmp_path / "run", tmp_path / "run" / "carry")


def test_exclude_leaves_out_finished_runs_and_rebuildable_folders(tmp_path):
    make_compare_tree(tmp_path / "study")
    (tmp_path / "study" / "data" / "patch_rho+0.00").mkdir(parents=True)
    (tmp_path / "study" / "data" / "patch_rho+0.00" / "0001.png").write_bytes(b"png")
    r = carry.save(tmp_path / "study", tmp_path / "carried", exclude=["data", "runs/regular/*"])
    assert r["runs"] == {"runs/proto-frozen/seed0": 10}
    carried = files(tmp_path / "carried")
    assert not any(f.startswith(("data/", "runs/regular/")) for f in carried)
    assert {"evals/regular_seed0_step000010.json", "runs/proto-frozen/seed0/latest.json"} <= carried
    assert carry.excluded(Path("runs/regular/seed0/config.json"), ["runs/regular"])
    assert not carry.excluded(Path("runs/regularly/x"), ["runs/regular"])
    with pytest.raises(carry.CarryError, match="outside --exclude"):
        carry.save(tmp_path / "study", tmp_path / "carried2", exclude=["runs"])


def test_save_refuses_a_carry_that_git_would_not_commit(tmp_path):
    """A `.gitignore` rule such as `runs/` once dropped a study's checkpoints from its carry without a word."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("runs/\n")
    make_compare_tree(tmp_path / "study")
    out = subprocess.run([sys.executable, str(SCRIPT), "save", str(tmp_path / "study"), str(repo / "carry" / "s")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "would not be committed" in out.stderr and "runs/regular/seed0/latest.json" in out.stderr
    assert "Traceback" not in out.stderr
    (repo / ".gitignore").write_text("runs/\n!/carry/**/runs/\n")
    ok = subprocess.run([sys.executable, str(SCRIPT), "save", str(tmp_path / "study"), str(repo / "carry" / "s")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert carry.ignored_by_git(repo / "carry" / "s") == []


def test_this_repository_commits_what_a_carry_holds():
    """The project's own .gitignore must let `carry/` hold runs and data sets."""
    root = SCRIPT.parents[1]
    probe = ["carry/x/runs/a/checkpoints/step_000001/model.safetensors", "carry/x/data/a/0.png",
             "carry/x/results/e.json"]
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=root, input="\n".join(probe) + "\n",
                       capture_output=True, text=True)
    if r.returncode == 128:
        pytest.skip("not a git checkout (installed from a wheel)")
    assert r.stdout.strip() == ""
