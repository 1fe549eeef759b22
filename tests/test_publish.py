"""tools/publish.py: the file to upload holds only what inference needs, loads through the grading loaders,
predicts what the run predicted, and its link + sha256 land in the manifest row the TAs' download reads."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch

from tools import download as dl
from tools import publish
from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import load_classifier
from utils.predict import load_segmenter

MANIFEST = ("# comment\ngroup,url,sha256,destination\ngrading,,,checkpoints/p1_best.pth\n"
            "grading,,,checkpoints/p2_best.pth\ndino-official,https://example.org/d.pth,,checkpoints/d.pth\n")


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text(MANIFEST)
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_problem_1_file_holds_only_inference_keys_and_fills_the_manifest(tiny_submission, tmp_path, manifest,
                                                                        capsys):
    out = tmp_path / "upload" / "p1_best.pth"
    link = "https://drive.google.com/file/d/1AbC-d_EfGh/view?usp=sharing"
    assert publish.main([str(tiny_submission["p1"]), "--problem", "1", "--output", str(out), "--link", link,
                         "--manifest", str(manifest)]) == 0
    published = torch.load(str(out), weights_only=True)
    assert set(published) == {"format_version", "kind", "model_config", "model", "image_size", "mean", "std",
                              "num_classes"}
    original = torch.load(str(tiny_submission["p1"]), weights_only=True)
    assert "args" in original and "setting" in original  # what was dropped was there
    for key in ("image_size", "mean", "std", "model_config"):
        assert published[key] == original[key]
    assert all(torch.equal(published["model"][k], v) for k, v in original["model"].items())
    model, ckpt = load_classifier(out, torch.device("cpu"))  # the loader p1_inference.py uses
    assert ckpt["kind"] == "p1_classifier"
    rows = dl.read_manifest(str(manifest))
    assert (rows[0].url, rows[0].sha256) == (link, sha(out))
    assert (rows[1].url, rows[1].sha256) == ("", "")  # problem 2's row untouched
    assert manifest.read_text().splitlines()[0] == "# comment"
    stdout = capsys.readouterr().out
    assert sha(out) in stdout and "{:.1f} MB".format(out.stat().st_size / 2 ** 20) in stdout
    assert "predicts exactly what" in stdout and "bash scripts/presubmit.sh" in stdout


def test_problem_2_from_a_resumable_checkpoint_drops_the_optimizer(tiny_submission, tmp_path, manifest, capsys):
    full = tiny_submission["p2"].parent / "checkpoint.pth"
    assert "optimizer" in torch.load(str(full), weights_only=True)
    out = tmp_path / "p2_best.pth"
    link = "https://www.dropbox.com/s/abc/p2_best.pth?dl=0"
    assert publish.main([str(full), "--problem", "2", "--output", str(out), "--link", link,
                         "--manifest", str(manifest), "--any-epoch"]) == 0  # not its best.pth: said so
    assert set(torch.load(str(out), weights_only=True)) == {"format_version", "kind", "model_config", "model"}
    load_segmenter(out, torch.device("cpu"))  # the loader p2_inference.py uses
    rows = dl.read_manifest(str(manifest))
    assert (rows[1].url, rows[1].sha256) == (link, sha(out)) and rows[0].url == ""
    assert "warning" not in capsys.readouterr().out  # 0.5 MB: no size warning


def test_without_a_link_it_says_what_to_do_and_republishing_in_place_keeps_the_bytes(tiny_submission, tmp_path,
                                                                                     manifest, capsys):
    out = tmp_path / "p2_best.pth"
    assert publish.main([str(tiny_submission["p2"]), "--problem", "2", "--output", str(out),
                         "--manifest", str(manifest)]) == 0
    assert manifest.read_text() == MANIFEST
    stdout = capsys.readouterr().out
    assert "next: upload" in stdout and "--link URL" in stdout
    digest, mtime = sha(out), out.stat().st_mtime_ns
    link = "https://github.com/me/hw1/releases/download/v1/p2_best.pth"
    assert publish.main([str(out), "--problem", "2", "--output", str(out), "--link", link,
                         "--manifest", str(manifest)]) == 0  # the command printed above
    assert out.stat().st_mtime_ns == mtime and sha(out) == digest
    assert dl.read_manifest(str(manifest))[1].sha256 == digest
    # writing the same run again gives the same bytes: the sha256 in the manifest stays valid
    again = tmp_path / "again.pth"
    assert publish.main([str(tiny_submission["p2"]), "--problem", "2", "--output", str(again)]) == 0
    assert sha(again) == digest


def test_size_warning_above_the_limit(tiny_submission, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(publish, "SIZE_LIMIT", 1000)
    assert publish.main([str(tiny_submission["p2"]), "--problem", "2", "--output", str(tmp_path / "a.pth")]) == 0
    assert "warning" in capsys.readouterr().out


def test_default_output_is_the_path_the_grading_script_loads():
    args = publish.get_args_parser().parse_args(["runs/p1_C/best.pth", "--problem", "1"])
    assert args.output is None and args.manifest.name == "manifest.csv"
    assert "checkpoints/p1_best.pth" in (publish.get_args_parser().format_help())
    assert "checkpoints/p1_best.pth" in open(os.path.join(dl.REPO_ROOT, "hw1_1.sh")).read()


@pytest.fixture(scope="module")
def odd_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    paths = {}
    paths["dino"] = root / "dino.pth"
    save_atomic(make_checkpoint("p1_dino", {"arch": "resnet18"}, {"w": torch.zeros(1)}), paths["dino"])
    paths["plain"] = root / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, str(paths["plain"]))
    paths["junk"] = root / "junk.pth"
    paths["junk"].write_bytes(b"not a checkpoint")
    return paths


@pytest.mark.parametrize("case, message", [
    ("dino", "'p1_dino' checkpoint; publish takes a best.pth"),
    ("plain", "not a checkpoint written by this project"),
    ("junk", "junk.pth"),
    ("missing", "checkpoint not found"),
    ("wrong problem", "problem 2 is graded with a 'p2_segmentation'"),
    ("setting A", "setting A; problem 1 grades setting C"),
    ("folder link", "folder link"),
])
def test_refusals_are_one_line_errors_that_change_nothing(case, message, odd_checkpoints, tiny_submission,
                                                          tmp_path, manifest, capsys):
    source = {"missing": tmp_path / "nope.pth", "wrong problem": tiny_submission["p1"],
              "folder link": tiny_submission["p2"]}.get(case, odd_checkpoints.get(case))
    problem = "1" if case in ("dino", "plain", "junk", "missing", "setting A") else "2"
    if case == "setting A":
        ckpt = torch.load(str(tiny_submission["p1"]), weights_only=True)
        source = tmp_path / "a.pth"
        save_atomic(dict(ckpt, setting="A"), source)
    link = "https://drive.google.com/drive/folders/1xyz" if case == "folder link" else "https://example.org/x.pth"
    out = tmp_path / "out" / "p_best.pth"
    assert publish.main([str(source), "--problem", problem, "--output", str(out), "--link", link,
                         "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:") and "Traceback" not in err
    assert manifest.read_text() == MANIFEST and not out.exists()
    if case == "setting A":
        assert publish.main([str(source), "--problem", "1", "--output", str(out), "--any-setting"]) == 0


def test_cli_as_documented(tiny_submission, tmp_path, manifest, repo_root):
    out = tmp_path / "p2_best.pth"
    proc = subprocess.run([sys.executable, "-m", "tools.publish", str(tiny_submission["p2"]), "--problem", "2",
                           "--output", str(out), "--link", "https://example.org/p2_best.pth", "--manifest",
                           str(manifest)], cwd=str(repo_root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert dl.read_manifest(str(manifest))[1].sha256 == sha(out)


@pytest.mark.parametrize("problem", ["1", "2"])
def test_a_published_file_that_predicts_otherwise_than_the_run_is_refused(problem, tiny_submission, tmp_path,
                                                                          manifest, monkeypatch, capsys):
    """The check loads the run's own file and the written one: weights changed on the way (here slightly, by a
    faulty slimming) are an error, and the manifest stays as it was."""
    real_slim = publish.slim_checkpoint

    def faulty_slim(ckpt):
        slim = real_slim(ckpt)
        slim["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in slim["model"].items()}
        return slim

    monkeypatch.setattr(publish, "slim_checkpoint", faulty_slim)
    source = tiny_submission["p" + problem]
    out = tmp_path / "p_best.pth"
    assert publish.main([str(source), "--problem", problem, "--output", str(out), "--link",
                         "https://example.org/x.pth", "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "does not predict what {} predicts".format(source) in err
    assert manifest.read_text() == MANIFEST
    if problem == "1":
        return
    # the comparison itself (problem 2: cheaper): the run's file against the changed one and against an exact copy
    kind = publish.KIND_OF_PROBLEM[problem]
    assert publish.same_predictions(source, out, kind) is False
    copy = tmp_path / "copy.pth"
    save_atomic(real_slim(torch.load(str(source), weights_only=True)), copy)
    assert publish.same_predictions(source, copy, kind) is True


def test_set_manifest_link_fills_one_row_and_keeps_the_rest(tmp_path):
    """(moved here with set_manifest_link from tools/download.py, its only user being this tool)"""
    path = tmp_path / "manifest.csv"
    path.write_text("# comment kept\ngroup,url,sha256,destination\ngrading,,,checkpoints/p1_best.pth\n"
                    "grading,,,checkpoints/p2_best.pth\n# another comment\n")
    link = "https://www.dropbox.com/scl/fi/x/p2_best.pth?rlkey=a,b&dl=0"  # a comma: the csv quotes it
    publish.set_manifest_link(str(path), "checkpoints/p2_best.pth", link, "AB" * 32)
    lines = path.read_text().splitlines()
    assert lines[0] == "# comment kept" and lines[2] == "grading,,,checkpoints/p1_best.pth"
    assert lines[4] == "# another comment"
    entries = dl.read_manifest(str(path))
    assert (entries[1].url, entries[1].sha256) == (link, "ab" * 32)
    with pytest.raises(dl.ManifestError, match="no 'grading' row for checkpoints/p3.pth"):
        publish.set_manifest_link(str(path), "checkpoints/p3.pth", link, "ab" * 32)
    with pytest.raises(dl.ManifestError, match="64 hex"):
        publish.set_manifest_link(str(path), "checkpoints/p1_best.pth", link, "not a hash")
    assert dl.read_manifest(str(path))[0].url == ""  # the refused edit left the file as it was
    assert sorted(os.listdir(str(tmp_path))) == ["manifest.csv"]



# ------------------------------------------------------------- issue 24: what publish takes and where it points

def test_set_manifest_link_refuses_two_rows_for_one_destination(tmp_path):
    path = tmp_path / "manifest.csv"
    text = ("group,url,sha256,destination\ngrading,,,checkpoints/p1_best.pth\ngrading,,,checkpoints/p2_best.pth\n"
            "grading,https://example.org/old.pth,{},checkpoints/p2_best.pth\n".format("ab" * 32))
    path.write_text(text)
    with pytest.raises(dl.ManifestError, match=r"2 'grading' rows for checkpoints/p2_best.pth \(lines 3, 4\)"):
        publish.set_manifest_link(str(path), "checkpoints/p2_best.pth", "https://example.org/new.pth", "cd" * 32)
    assert path.read_text() == text


@pytest.mark.parametrize("link, reachable", [
    ("http://localhost:8000/p1_best.pth", False),
    ("http://127.0.0.1/p1_best.pth", False),
    ("https://192.168.1.20/p1_best.pth", False),
    ("http://10.0.0.5:8080/p1_best.pth", False),
    ("http://[::1]/p1_best.pth", False),
    ("http://[fe80::1]/p1_best.pth", False),
    ("http://fileserver/p1_best.pth", False),
    ("http://nas.local/p1_best.pth", False),
    ("https://drive.google.com/file/d/1AbC/view?usp=sharing", True),
    ("https://github.com/me/hw1/releases/download/v1/p1_best.pth", True),
    ("https://8.8.8.8/p1_best.pth", True),
])
def test_links_no_ta_can_reach_are_named(link, reachable):
    assert (publish.unreachable_link(link) is None) == reachable


def test_publish_warns_on_a_link_no_ta_can_reach(tiny_submission, tmp_path, manifest, capsys):
    out = tmp_path / "p2_best.pth"
    link = "http://192.168.1.20:8000/p2_best.pth"
    assert publish.main([str(tiny_submission["p2"]), "--problem", "2", "--output", str(out), "--link", link,
                         "--manifest", str(manifest)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and link in err and "private" in err and "TAs" in err


@pytest.mark.parametrize("name", ["checkpoint.pth", "snapshot_epoch001.pth", "epoch_003.pth", "checkpoint_epoch002.pth"])
def test_a_run_state_or_snapshot_is_not_published_as_the_best_model(name, tiny_submission, tmp_path, manifest,
                                                                    capsys):
    """checkpoint.pth holds the last epoch (with the optimizer), a snapshot or epoch_NNN.pth one chosen epoch: the
    graded model is the best validation epoch's best.pth. Refused, naming it, unless --any-epoch."""
    run = tiny_submission["p2"].parent
    source = run / "checkpoint.pth"
    if name != "checkpoint.pth":
        source = tmp_path / name
        source.write_bytes(tiny_submission["p2"].read_bytes())
    out = tmp_path / "out" / "p2_best.pth"
    assert publish.main([str(source), "--problem", "2", "--output", str(out), "--link",
                         "https://example.org/p2.pth", "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(source) in err and "best.pth" in err and "--any-epoch" in err
    assert manifest.read_text() == MANIFEST and not out.exists()
    assert publish.main([str(source), "--problem", "2", "--output", str(out), "--any-epoch"]) == 0


def test_setting_c_trained_from_a_random_backbone_is_refused(tiny_submission, tmp_path, manifest, capsys):
    """Setting C is fine-tuned from your SSL pre-trained backbone: one trained with --backbone none is setting A in
    all but name. Refused naming why, unless --any-setting."""
    ckpt = torch.load(str(tiny_submission["p1"]), weights_only=True)
    source = tmp_path / "best.pth"
    save_atomic(dict(ckpt, backbone_source="none", args=dict(ckpt["args"], backbone="none")), source)
    out = tmp_path / "out" / "p1_best.pth"
    assert publish.main([str(source), "--problem", "1", "--output", str(out), "--link",
                         "https://example.org/p1.pth", "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--backbone none" in err and "--any-setting" in err
    assert manifest.read_text() == MANIFEST and not out.exists()
    assert publish.main([str(source), "--problem", "1", "--output", str(out), "--any-setting"]) == 0
