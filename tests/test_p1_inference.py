"""The problem-1 grading path: hw1_1.sh / p1_inference.py against the grader's contract."""
import csv
import os
import random
import shutil
import subprocess

import pytest
import torch

import p1_inference
from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import classify, eval_transform_for, load_classifier
from utils.datasets import read_rgb, to_chw_uint8
from utils.classify import build_classifier
from tools.toydata import make_p1_data

CONFIG = {"arch": "resnet18", "num_classes": 5, "hidden_dim": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def p1(tmp_path_factory):
    """Toy office val split (5 classes x 4 images of varying sizes) and a small random-weight classifier."""
    root = make_p1_data(tmp_path_factory.mktemp("toy_p1"), num_classes=5, mini_per_class=0,
                        office_train_per_class=0, office_val_per_class=4, seed=0)
    torch.manual_seed(0)
    model = build_classifier(CONFIG)
    with torch.no_grad():  # non-trivial BatchNorm statistics so that predictions differ between images
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "p1.pth"
    save_atomic(make_checkpoint("p1_classifier", CONFIG, model.state_dict(), None, image_size=32), checkpoint)
    return root / "office" / "val.csv", root / "office" / "val", checkpoint


def _hw1_1(repo_root, csv_path, image_dir, out_csv, checkpoint, cwd=None):
    env = dict(os.environ, HW1_P1_CHECKPOINT=str(checkpoint), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(repo_root / "hw1_1.sh"), str(csv_path), str(image_dir), str(out_csv)],
                          cwd=str(cwd or repo_root), env=env, capture_output=True, text=True, timeout=300)


def _read_output(path):
    with open(str(path), newline="") as f:
        lines = list(csv.reader(f))
    return lines[0], lines[1:]


def _val_rows(val_csv):
    with open(str(val_csv), newline="") as f:
        return list(csv.DictReader(f))


def test_hw1_1_unlabeled_shuffled_csv(p1, tmp_path, repo_root):
    val_csv, image_dir, checkpoint = p1
    rows = _val_rows(val_csv)
    random.Random(0).shuffle(rows)
    # the hidden test csv's 'None' labels, plus a BOM, an extra column, another column order, an empty label
    # and a filename with a folder part, read at that path (the output keeps the bare name)
    images = tmp_path / "images"
    shutil.copytree(str(image_dir), str(images))
    (images / "sub").mkdir()
    shutil.copy(str(images / rows[1]["filename"]), str(images / "sub" / rows[1]["filename"]))
    lines = ["filename,extra,label,id"]
    for k, r in enumerate(rows):
        name = ("sub/" + r["filename"]) if k == 1 else r["filename"]
        lines.append("{},x{},{},{}".format(name, k, "" if k == 2 else "None", 100 + int(r["id"])))
    in_csv = tmp_path / "test.csv"
    in_csv.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    out_csv = tmp_path / "nested" / "deeper" / "pred.csv"  # created by the script itself
    proc = _hw1_1(repo_root, in_csv, images, out_csv, checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error" not in proc.stderr
    header, out = _read_output(out_csv)
    assert header == ["id", "filename", "label"]
    assert [(o[0], o[1]) for o in out] == [(str(100 + int(r["id"])), r["filename"]) for r in rows]
    labels = [int(o[2]) for o in out]
    assert all(0 <= label < CONFIG["num_classes"] for label in labels)
    assert "accuracy" not in proc.stdout  # no labels, no accuracy
    assert [p.name for p in out_csv.parent.iterdir()] == ["pred.csv"]  # no stray temp file


def test_accuracy_equals_an_independent_computation(p1, tmp_path, capsys):
    val_csv, image_dir, checkpoint = p1
    out_csv = tmp_path / "pred.csv"
    args = p1_inference.get_args_parser().parse_args([
        "--csv", str(val_csv), "--image-dir", str(image_dir), "--output", str(out_csv),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--batch-size", "7", "--workers", "0"])
    result = p1_inference.main(args)
    assert result["rows"] == 20 and result["failed"] == []

    device = torch.device("cpu")
    model, ckpt = load_classifier(checkpoint, device)
    transform = eval_transform_for(ckpt)
    rows = _val_rows(val_csv)
    expected = []
    for r in rows:  # one image at a time, no DataLoader
        image = transform(to_chw_uint8(read_rgb(image_dir / r["filename"])))
        expected.append(int(classify(model, image[None], ckpt).argmax(dim=1)))
    assert len(set(expected)) > 1  # the check means something only if predictions differ
    _, out = _read_output(out_csv)
    assert [int(o[2]) for o in out] == expected
    assert [o[0] for o in out] == [r["id"] for r in rows]
    accuracy = sum(p == int(r["label"]) for p, r in zip(expected, rows)) / len(rows)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert "accuracy {:.4f} on 20 image(s)".format(accuracy) in capsys.readouterr().out
    args.output = tmp_path  # an existing folder where the csv should go: named, before any work
    with pytest.raises(ValueError, match=r"^output {} is a folder; give a csv file path$".format(tmp_path)):
        p1_inference.main(args)


def test_a_bad_label_at_inference_is_a_warning_naming_the_line_and_the_row_is_predicted(p1, tmp_path, repo_root):
    """Before: one non-integer label aborted the whole inference (exit 2), though labels are not needed there.
    Now it is a warning naming the csv line; the row is predicted; the accuracy counts the valid labels only.
    Training keeps refusing such a csv."""
    from utils.datasets import read_image_csv

    val_csv, image_dir, checkpoint = p1
    rows = _val_rows(val_csv)[:6]
    labels = [r["label"] for r in rows]
    labels[2], labels[4] = "cat", "inf"  # csv lines 4 and 6
    in_csv = tmp_path / "in.csv"
    in_csv.write_text("id,filename,label\n" + "".join("{},{},{}\n".format(r["id"], r["filename"], label)
                                                       for r, label in zip(rows, labels)))
    out_csv = tmp_path / "pred.csv"
    proc = _hw1_1(repo_root, in_csv, image_dir, out_csv, checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: csv {}: 2 row(s) without a usable label are predicted but not scored: line 4: label 'cat' is " \
        "not an integer; line 6: label 'inf' is not an integer".format(in_csv) in proc.stderr
    _, out = _read_output(out_csv)
    predicted = [int(o[2]) for o in out]
    assert [o[1] for o in out] == [r["filename"] for r in rows]
    assert all(0 <= label < CONFIG["num_classes"] for label in predicted)
    valid = [(int(label), p) for label, p in zip(labels, predicted) if label not in ("cat", "inf")]
    accuracy = sum(label == p for label, p in valid) / len(valid)
    assert "accuracy {:.4f} on 4 image(s) (2 without a valid label, not counted)".format(accuracy) in proc.stdout
    with pytest.raises(ValueError, match="line 4: label 'cat' is not an integer"):
        read_image_csv(in_csv)  # what training reads it with


def test_csv_without_id_column_uses_the_row_index(p1, tmp_path):
    val_csv, image_dir, checkpoint = p1
    rows = _val_rows(val_csv)[:3]
    in_csv = tmp_path / "noid.csv"
    in_csv.write_text("filename\n" + "\n".join(r["filename"] for r in rows) + "\n")
    out_csv = tmp_path / "pred.csv"
    args = p1_inference.get_args_parser().parse_args([
        "--csv", str(in_csv), "--image-dir", str(image_dir), "--output", str(out_csv),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0"])
    result = p1_inference.main(args)
    assert "accuracy" not in result
    _, out = _read_output(out_csv)
    assert [(o[0], o[1]) for o in out] == [("0", rows[0]["filename"]), ("1", rows[1]["filename"]),
                                           ("2", rows[2]["filename"])]


def test_corrupt_and_missing_images_are_named_and_the_rest_written(p1, tmp_path, repo_root):
    val_csv, image_dir, checkpoint = p1
    rows = _val_rows(val_csv)[:6]
    images = tmp_path / "images"
    images.mkdir()
    for r in rows:
        (images / r["filename"]).write_bytes((image_dir / r["filename"]).read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    names = [r["filename"] for r in rows]
    names.insert(1, "broken.jpg")    # csv line 3
    names.insert(4, "missing.jpg")   # csv line 6
    in_csv = tmp_path / "in.csv"
    in_csv.write_text("id,filename,label\n" + "".join("{},{},None\n".format(i, n) for i, n in enumerate(names)))
    out_csv = tmp_path / "out" / "pred.csv"
    proc = _hw1_1(repo_root, in_csv, images, out_csv, checkpoint)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert any("line 3" in e and "broken.jpg" in e for e in errors), proc.stderr
    assert any("line 6" in e and "missing.jpg" in e for e in errors), proc.stderr
    header, out = _read_output(out_csv)
    assert header == ["id", "filename", "label"]
    assert [o[1] for o in out] == names
    labels = [int(o[2]) for o in out]
    assert labels[1] == -1 and labels[4] == -1
    assert all(0 <= label < CONFIG["num_classes"] for i, label in enumerate(labels) if i not in (1, 4))
    assert [p.name for p in out_csv.parent.iterdir()] == ["pred.csv"]


def test_csv_without_filename_column_is_a_one_line_error(p1, tmp_path, repo_root):
    _, image_dir, checkpoint = p1
    no_filename = tmp_path / "nofile.csv"
    no_filename.write_text("id,image,label\n0,0_0.jpg,0\n")
    out_csv = tmp_path / "o" / "pred.csv"
    proc = _hw1_1(repo_root, no_filename, image_dir, out_csv, checkpoint)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and "nofile.csv" in proc.stderr and "filename" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out_csv.exists()


def test_a_csv_field_over_the_limit_is_a_one_line_error_naming_file_and_line(p1, tmp_path, repo_root):
    _, image_dir, checkpoint = p1
    in_csv = tmp_path / "long.csv"
    in_csv.write_text("id,filename,label\n0,a.jpg,None\n1,\"" + "x" * 140000 + "\",None\n")
    proc = _hw1_1(repo_root, in_csv, image_dir, tmp_path / "pred.csv", checkpoint)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: csv {} line 3: field larger than field limit".format(in_csv))
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["absent csv", "absent folder", "empty folder", "output under a file"])
def test_clear_errors(p1, tmp_path, case):
    # in-process: run_cli turns these exceptions into 'error: <message>' and exit code 2 (shown just above)
    val_csv, image_dir, checkpoint = p1
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    in_csv, images, out_csv, named = {
        "absent csv": (tmp_path / "absent.csv", image_dir, tmp_path / "pred.csv", "absent.csv"),
        "absent folder": (val_csv, tmp_path / "no_such_dir", tmp_path / "pred.csv", "no_such_dir"),
        "empty folder": (val_csv, tmp_path / "empty", tmp_path / "pred.csv", "empty"),
        "output under a file": (val_csv, image_dir, tmp_path / "a_file" / "pred.csv", "a_file"),
    }[case]
    args = p1_inference.get_args_parser().parse_args([
        "--csv", str(in_csv), "--image-dir", str(images), "--output", str(out_csv),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0"])
    with pytest.raises((FileNotFoundError, ValueError), match=named):
        p1_inference.main(args)
    assert not out_csv.exists()


OLD_PREDICTIONS = "id,filename,label\n0,old.jpg,3\n"


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path):
    target = tmp_path / "pred.csv"
    target.write_text(OLD_PREDICTIONS)  # an earlier run's: the only kind of file the output may replace

    class Unprintable(object):
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        p1_inference.write_csv_atomic(target, ["id", "filename", "label"], [["0", "a.jpg", 1], [Unprintable()]])
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"] and target.read_text() == OLD_PREDICTIONS


def test_a_full_disk_names_the_csv_and_keeps_the_old_one(tmp_path):
    import errno

    target = tmp_path / "pred.csv"
    target.write_text(OLD_PREDICTIONS)  # an earlier run's: the only kind of file the output may replace

    class DiskFull(object):
        def __str__(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="cannot write csv .*pred.csv: No space left on device") as info:
        p1_inference.write_csv_atomic(target, ["id", "filename", "label"], [["0", "a.jpg", DiskFull()]])
    assert info.value.errno == errno.ENOSPC  # kept: `error: [Errno 28] cannot write csv ...`
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"] and target.read_text() == OLD_PREDICTIONS


def test_a_symlinked_output_csv_is_replaced_not_written_through(p1, tmp_path):
    """The csv was already written atomically; this keeps it so: an output path that is a symlink to another file
    (here an image) gets a new file in its place and the file it pointed to is untouched."""
    val_csv, image_dir, checkpoint = p1
    victim = tmp_path / "victim.jpg"
    victim.write_bytes((image_dir / _val_rows(val_csv)[0]["filename"]).read_bytes())
    before = victim.read_bytes()
    out_csv = tmp_path / "pred.csv"
    os.symlink("victim.jpg", str(out_csv))
    args = p1_inference.get_args_parser().parse_args([
        "--csv", str(val_csv), "--image-dir", str(image_dir), "--output", str(out_csv),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0"])
    p1_inference.main(args)
    assert victim.read_bytes() == before
    assert not out_csv.is_symlink() and _read_output(out_csv)[0] == ["id", "filename", "label"]


@pytest.mark.parametrize("argv", [["CSV", "DIR"], [], ["CSV", "DIR", "OUT", "extra"], ["CSV", "", "OUT"]])
def test_hw1_1_checks_its_arguments(tmp_path, repo_root, argv):
    (tmp_path / "in.csv").write_text("id,filename,label\n0,a.jpg,None\n")
    argv = [{"CSV": str(tmp_path / "in.csv"), "DIR": str(tmp_path), "OUT": str(tmp_path / "o.csv")}.get(a, a)
            for a in argv]
    before = sorted(os.listdir(str(repo_root)))
    proc = subprocess.run(["bash", str(repo_root / "hw1_1.sh")] + argv, cwd=str(repo_root), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: bash hw1_1.sh <images csv> "), proc.stderr
    assert sorted(os.listdir(str(repo_root))) == before and sorted(os.listdir(str(tmp_path))) == ["in.csv"]


def test_hw1_1_runs_from_any_folder(p1, tmp_path, repo_root):
    val_csv, image_dir, checkpoint = p1
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "in.csv").write_text("id,filename,label\n0,{},None\n".format(_val_rows(val_csv)[0]["filename"]))
    proc = _hw1_1(repo_root, "in.csv", image_dir, "out/pred.csv", checkpoint, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _read_output(work / "out" / "pred.csv")[1][0][:2] == ["0", _val_rows(val_csv)[0]["filename"]]


def test_hw1_1_obeys_the_script_rules(repo_root):
    path = repo_root / "hw1_1.sh"
    assert os.access(str(path), os.X_OK)
    code = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("#"))
    for word in ("rm", "cp", "mv", "mkdir", "cd", "pip", "sudo", "CUDA_VISIBLE_DEVICES"):
        assert not any(tok == word for tok in code.replace('"', " ").split()), word
    assert "CUDA_VISIBLE_DEVICES" not in code
    assert any(line.split()[0] == "python3" for line in code.splitlines() if line.strip())
    assert "p1_inference.py" in code and all(a in code for a in ('"$1"', '"$2"', '"$3"'))


def test_eval_transform_resizes_in_float_so_scores_do_not_depend_on_the_torchvision_release():
    """The evaluation view is the float antialiased bilinear resize of the whole image, then the centre crop,
    with no rounding to uint8 (whose kernels differ between torchvision releases; see classify_eval_transform)."""
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 67, 90), dtype=torch.uint8)
    out = eval_transform_for({"image_size": 32})(image)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    # independent computation: short side 67 -> 32, long side int(32 * 90 / 67) = 42, centre 32 columns
    ref = torch.nn.functional.interpolate(image[None].float(), size=(32, 42), mode="bilinear", antialias=True,
                                          align_corners=False)[0]
    left = int(round((42 - 32) / 2.0))
    torch.testing.assert_close(out, ref[:, :, left:left + 32], rtol=0, atol=1e-3)
    assert (out != out.round()).float().mean() > 0.5  # not rounded to grey levels


def test_an_output_csv_that_is_one_of_the_input_images_is_refused_and_the_image_kept(p1, tmp_path, repo_root):
    """Before: `hw1_1.sh val.csv val val/0_4.jpg` replaced the input image 0_4.jpg with the csv (exit 0), though
    the input csv itself is refused as output. Now an image the csv lists is refused too, before any work."""
    val_csv, image_dir, checkpoint = p1
    images = tmp_path / "images"
    shutil.copytree(str(image_dir), str(images))
    name = _val_rows(val_csv)[0]["filename"]
    before = (images / name).read_bytes()
    proc = _hw1_1(repo_root, val_csv, images, images / name, checkpoint)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: output ") and name in proc.stderr and "input image" in proc.stderr
    assert (images / name).read_bytes() == before


def test_rows_with_every_field_empty_are_skipped_not_an_error(p1, tmp_path, repo_root):
    """Before: a csv whose last lines are ',,' (a spreadsheet's empty rows) or spaces stopped the whole grading run:
    'error: csv ... line 4: empty filename' (exit 2, no predictions). Such rows are no rows: skipped; a row with an
    id or label but no filename stays an error naming its line."""
    val_csv, image_dir, checkpoint = p1
    rows = _val_rows(val_csv)[:2]
    in_csv = tmp_path / "in.csv"
    in_csv.write_text("id,filename,label\n" + "".join("{},{},None\n".format(r["id"], r["filename"]) for r in rows)
                      + ",,\n  \n , ,\n")
    out_csv = tmp_path / "pred.csv"
    proc = _hw1_1(repo_root, in_csv, image_dir, out_csv, checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, out = _read_output(out_csv)
    assert [(o[0], o[1]) for o in out] == [(r["id"], r["filename"]) for r in rows]
    in_csv.write_text("id,filename,label\n0,{},None\n7,,None\n".format(rows[0]["filename"]))
    proc = _hw1_1(repo_root, in_csv, image_dir, tmp_path / "pred2.csv", checkpoint)
    assert proc.returncode == 2 and "line 3: empty filename" in proc.stderr


def test_predictions_use_the_checkpoints_own_size_and_normalisation(p1, tmp_path):
    """A checkpoint that stores another image size and mean/std than the defaults: each predicted label is the argmax
    of the eval-mode model on the image resized and centre-cropped to that size and normalised by hand with those
    statistics, in the csv's row order with its ids."""
    from utils.transforms import classify_eval_transform

    val_csv, image_dir, checkpoint = p1
    ckpt = torch.load(str(checkpoint), weights_only=True)
    mean, std = [0.1, 0.6, 0.3], [0.2, 0.15, 0.35]
    other = tmp_path / "other.pth"
    save_atomic(make_checkpoint("p1_classifier", CONFIG, ckpt["model"], None, image_size=40, mean=mean, std=std),
                other)
    out_csv = tmp_path / "pred.csv"
    p1_inference.main(p1_inference.get_args_parser().parse_args([
        "--csv", str(val_csv), "--image-dir", str(image_dir), "--output", str(out_csv), "--checkpoint", str(other),
        "--device", "cpu", "--batch-size", "6", "--workers", "0"]))
    model = build_classifier(CONFIG)
    model.load_state_dict(ckpt["model"])
    model.eval()
    m, s = torch.tensor(mean).view(3, 1, 1) * 255, torch.tensor(std).view(3, 1, 1) * 255
    rows = _val_rows(val_csv)
    with torch.no_grad():
        images = torch.stack([classify_eval_transform(40)(to_chw_uint8(read_rgb(image_dir / r["filename"])))
                              for r in rows])
        expected = model((images - m) / s).argmax(1).tolist()
        imagenet = classify(model, images).argmax(1).tolist()
    assert expected != imagenet  # the statistics change some predictions, so the check can see them ignored
    _, out = _read_output(out_csv)
    assert [(o[0], o[1], int(o[2])) for o in out] == [(r["id"], r["filename"], e) for r, e in zip(rows, expected)]


@pytest.mark.parametrize("target", ["checkpoint", "user_file", "prediction"])
def test_the_output_csv_replaces_only_a_prediction_csv(p1, tmp_path, repo_root, target):
    """Before: `hw1_1.sh val.csv val checkpoints/p1_best.pth` (output = the checkpoint) replaced the model file with
    the csv, exit 0. The output may replace an earlier prediction csv (its header id,filename,label) and nothing
    else: the checkpoint and a user's file are refused before any work, byte for byte unchanged."""
    val_csv, image_dir, checkpoint = p1
    ckpt = tmp_path / "p1_best.pth"
    shutil.copy(str(checkpoint), str(ckpt))
    out = {"checkpoint": ckpt, "user_file": tmp_path / "notes.csv", "prediction": tmp_path / "pred.csv"}[target]
    if target == "user_file":
        out.write_text("name,score\nalice,3\n")
    if target == "prediction":
        out.write_text("id,filename,label\n0,x.jpg,3\n")
    before = out.read_bytes()
    proc = _hw1_1(repo_root, val_csv, image_dir, out, ckpt)
    if target == "prediction":
        assert proc.returncode == 0, proc.stderr
        assert len(out.read_text().splitlines()) == len(_val_rows(val_csv)) + 1
        return
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert str(out) in proc.stderr and "refusing" in proc.stderr
    assert out.read_bytes() == before


# ------------------------------------------------------------- Ctrl-C, a symlink loop, the default checkpoint

def test_ctrl_c_in_p1_inference_is_one_line_exit_130_and_leaves_no_file(p1, tmp_path, monkeypatch, capsys):
    csv_path, image_dir, checkpoint = p1
    out = tmp_path / "out" / "pred.csv"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(p1_inference, "classify", interrupted)
    with pytest.raises(SystemExit) as info:
        p1_inference.cli(["--csv", str(csv_path), "--image-dir", str(image_dir), "--output", str(out),
                          "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 130 and err.startswith("interrupted") and err.count("\n") == 1, err
    assert list(out.parent.iterdir()) == []  # no csv, no temp file


def test_an_output_csv_that_is_a_symlink_loop_is_a_one_line_error(p1, tmp_path, repo_root):
    csv_path, image_dir, checkpoint = p1
    loop = tmp_path / "loop.csv"
    os.symlink("loop.csv", str(loop))
    proc = _hw1_1(repo_root, csv_path, image_dir, loop, checkpoint)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and str(loop) in proc.stderr and "symlink loop" in proc.stderr


def test_a_missing_default_checkpoint_says_to_run_hw1_download_ckpt(p1, tmp_path, repo_root):
    csv_path, image_dir, _ = p1
    clone = tmp_path / "clone"  # the grading script and its code, no checkpoints/: a clone before the download
    clone.mkdir()
    for name in ("hw1_1.sh", "p1_inference.py", "utils"):
        os.symlink(str(repo_root / name), str(clone / name))
    env = {k: v for k, v in os.environ.items() if k != "HW1_P1_CHECKPOINT"}
    proc = subprocess.run(["bash", str(clone / "hw1_1.sh"), str(csv_path), str(image_dir), str(tmp_path / "p.csv")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert str(clone / "checkpoints" / "p1_best.pth") in proc.stderr
    assert "run `bash hw1_download_ckpt.sh` first" in proc.stderr
    proc = _hw1_1(repo_root, csv_path, image_dir, tmp_path / "p.csv", tmp_path / "mine.pth")
    assert proc.returncode == 2 and str(tmp_path / "mine.pth") in proc.stderr
    assert "hw1_download_ckpt" not in proc.stderr


def test_a_csv_path_with_a_folder_is_read_there_and_answered_with_the_bare_name(p1, tmp_path, repo_root):
    """`sub/dir/x.jpg` missing under the image folder is a failed row named as written (never the top-level x.jpg);
    present there, it is predicted, and the output has the bare filename (the grader's contract)."""
    csv_path, image_dir, checkpoint = p1
    rows = _val_rows(csv_path)
    name = rows[0]["filename"]
    images = tmp_path / "images"
    shutil.copytree(str(image_dir), str(images))
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("id,filename,label\n0,sub/dir/{},None\n1,{},None\n".format(name, rows[1]["filename"]))
    proc = _hw1_1(repo_root, test_csv, images, tmp_path / "pred.csv", checkpoint)
    assert proc.returncode == 1 and "sub/dir/{}".format(name) in proc.stderr, proc.stderr[-2000:]
    header, body = _read_output(tmp_path / "pred.csv")
    assert body[0] == ["0", name, "-1"] and body[1][2] != "-1"
    (images / "sub" / "dir").mkdir(parents=True)
    shutil.copy(str(images / name), str(images / "sub" / "dir" / name))
    proc = _hw1_1(repo_root, test_csv, images, tmp_path / "pred.csv", checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, body = _read_output(tmp_path / "pred.csv")
    assert body[0][:2] == ["0", name] and body[0][2] != "-1"
