"""Reliability: bad input found before training, signals, kills, out of memory, output safety, determinism, and
bounded memory at inference. (Checkpoint safety -- atomic writes, crafted pickles, truncated files, wrong kinds --
is tested in test_checkpoint.py; image modes and corrupt files in test_datasets.py.)"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils.checkpoint import load_checkpoint, load_safe
from utils.datasets import CsvImages, SegmentationDataset, UnlabeledImages, read_image_csv
from tools.toydata import make_p1_data

ROOT = Path(__file__).resolve().parents[1]
UNET = ["--base-width", "8", "--depth", "2", "--crop-size", "64", "--batch-size", "2", "--workers", "0",
        "--lr", "3e-3"]


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1", **extra)


def _copy_split(src: Path, dst: Path) -> Path:
    shutil.copytree(str(src), str(dst))
    return dst


# ---------------------------------------------------------------- bad input, found before the first step

def _spoil(folder: Path):
    """Three kinds of unusable images in a p2 split: truncated JPEG, zero bytes, text named .jpg."""
    (folder / "0000_sat.jpg").write_bytes((folder / "0000_sat.jpg").read_bytes()[:200])
    (folder / "0001_sat.jpg").write_bytes(b"")
    (folder / "0002_sat.jpg").write_text("not an image")
    return ["0000_sat.jpg", "0001_sat.jpg", "0002_sat.jpg"]


def test_unusable_images_are_skipped_with_a_warning_or_refused_under_strict(toy_p2, tmp_path, capsys):
    train = _copy_split(toy_p2 / "train", tmp_path / "train")
    bad = _spoil(train)
    ds = SegmentationDataset(train)
    assert len(ds) == 24 - 3 and all(p[0].name not in bad for p in ds.pairs)
    err = capsys.readouterr().err
    assert "skipping 3 of 24" in err and all(name in err for name in bad)
    with pytest.raises(ValueError, match="3 of 24 image/mask pairs") as info:
        SegmentationDataset(train, strict=True)
    assert all(name in str(info.value) for name in bad)


def test_mask_problems_are_named(toy_p2, tmp_path, capsys):
    train = _copy_split(toy_p2 / "train", tmp_path / "train")
    Image.new("RGB", (10, 10)).save(str(train / "0003_mask.png"))  # wrong size
    (train / "0004_mask.png").write_bytes(b"\x89PNG broken")
    # anti-aliased, off-palette colours decode by the grader's threshold rule: no problem
    mask = np.asarray(Image.open(str(train / "0005_mask.png")).convert("RGB")).copy()
    mask[:4] = (200, 30, 220)  # -> purple (rangeland)
    Image.fromarray(mask).save(str(train / "0005_mask.png"))
    with pytest.raises(ValueError) as info:
        SegmentationDataset(train, strict=True)
    message = str(info.value)
    assert "2 of 24" in message and "0003_mask.png is 10x10" in message and "0004_mask.png" in message
    ds = SegmentationDataset(train)
    assert len(ds) == 22
    index = [p[0].name for p in ds.pairs].index("0005_sat.jpg")
    assert (ds[index][1][:4] == 2).all()


def test_class_index_masks_stop_training_before_the_first_step(toy_p2, tmp_path):
    """Before: masks saved as class indices (grey 0..6) all decoded to 'unknown' and training ran to mIoU 0 with no
    warning. Now each is unusable, named, and a split of nothing else is an error before training."""
    from utils.masks import read_mask

    train = _copy_split(toy_p2 / "train", tmp_path / "train")
    for mask in train.glob("*_mask.png"):
        Image.fromarray(read_mask(mask)).save(str(mask))  # class indices as a grayscale PNG
    with pytest.raises(ValueError, match="24 of 24 image/mask pairs .* holds class indices") as info:
        SegmentationDataset(train)
    assert "0000_mask.png" in str(info.value) and "Mask colours" in str(info.value)


@pytest.mark.parametrize("kind", ["ignore-border", "voc-palette"])
def test_class_index_masks_with_ignore_or_a_palette_stop_training_before_the_first_step(toy_p2, tmp_path, kind):
    """Before: indices with a 255 'ignore' border (grey) decoded to 'unknown' + 'barren', and indices in a VOC
    palette image to permuted classes; both trained silently. Now the trainer exits 2 naming a mask, no checkpoint."""
    from utils.masks import read_mask

    data = tmp_path / "p2"
    train, _ = _copy_split(toy_p2 / "train", data / "train"), _copy_split(toy_p2 / "validation", data / "validation")
    for mask in train.glob("*_mask.png"):
        classes = read_mask(mask)
        if kind == "ignore-border":
            classes[0, :] = classes[:, 0] = 255
            Image.fromarray(classes, "L").save(str(mask))
            continue
        image = Image.fromarray(classes, "P")
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128])  # VOC
        image.save(str(mask))
    proc = subprocess.run([sys.executable, "p2_unet.py", "--data-dir", str(data), "--output-dir",
                           str(tmp_path / "run"), "--epochs", "1"] + UNET,
                          cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: 24 of 24 image/mask pairs") and "class indices" in proc.stderr
    assert "0000_mask.png" in proc.stderr and "docs/data.md#mask-colours" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "checkpoint.pth").exists()


def test_trainer_with_strict_stops_before_training_and_names_the_file(toy_p2, tmp_path):
    data = tmp_path / "p2"
    _copy_split(toy_p2 / "train", data / "train")
    _copy_split(toy_p2 / "validation", data / "validation")
    (data / "train" / "0007_sat.jpg").write_bytes(b"")
    proc = subprocess.run([sys.executable, "p2_unet.py", "--data-dir", str(data), "--output-dir",
                           str(tmp_path / "run"), "--epochs", "1", "--strict"] + UNET,
                          cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: 1 of 24 image/mask pairs") and "0007_sat.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "checkpoint.pth").exists()


def test_unlabeled_and_csv_datasets_check_their_images(tmp_path, capsys):
    root = make_p1_data(tmp_path, mini_size=32, num_classes=2, mini_per_class=3, office_train_per_class=2,
                        office_val_per_class=1)
    (root / "mini" / "train" / "00001.jpg").write_bytes(b"GIF89a")
    assert len(UnlabeledImages(root / "mini" / "train")) == 5
    assert "00001.jpg" in capsys.readouterr().err
    (root / "office" / "train" / "1_0.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="1_0.jpg"):
        CsvImages(root / "office" / "train.csv", root / "office" / "train", strict=True)
    # grayscale, CMYK, RGBA and 16-bit images are usable, not errors
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.new("L", (20, 20), 90).save(str(folder / "a.png"))
    Image.new("CMYK", (20, 20), (10, 20, 30, 0)).save(str(folder / "b.jpg"))
    Image.new("RGBA", (20, 20), (1, 2, 3, 128)).save(str(folder / "c.png"))
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(str(folder / "d.png"))
    ds = UnlabeledImages(folder, strict=True)
    assert len(ds) == 4 and all(ds[i].shape == (3, 20, 20) for i in range(4))


@pytest.mark.parametrize("content, message", [
    ("\ufeffid,filename,label,extra\n0,a.jpg,3,x\n1,b.jpg,None,y\n", None),  # BOM, extra column, None label
    ("id,filename,label\n0,a.jpg,1\n0,b.jpg,2\n", "lines 2 and 3: duplicate id '0'"),
    ("id,filename,label\n0,a.jpg,1\n1,a.jpg,2\n", "lines 2 and 3: duplicate filename 'a.jpg'"),
    ("id,filename,label\n0,a.jpg,65\n", "line 2: label 65 outside 0..64"),
    ("id,filename,label\n0,a.jpg,-3\n", "line 2: label -3 outside 0..64"),
    # before: OverflowError / csv.Error tracebacks naming no file
    ("id,filename,label\n0,a.jpg,1\n1,b.jpg,inf\n", "x.csv line 3: label 'inf' is not an integer"),
    ("id,filename,label\n0,a.jpg,-inf\n", "x.csv line 2: label '-inf' is not an integer"),
    ("id,filename,label\n0,a.jpg,1.5\n", "x.csv line 2: label '1.5' is not an integer"),  # was read as 1
    pytest.param("id,filename,label\n0,a.jpg,1\n1,\"" + "b" * 140000 + "\",2\n",
                 "x.csv line 3: field larger than field limit", id="field-over-131072"),
])
def test_csv_rows(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content.encode("utf-8"))
    if message is None:
        rows = read_image_csv(path, num_classes=65)
        assert [(r.id, r.filename, r.label) for r in rows] == [("0", "a.jpg", 3), ("1", "b.jpg", None)]
    else:
        with pytest.raises(ValueError, match=message):
            read_image_csv(path, num_classes=65)


def test_a_latin1_csv_is_read_with_a_warning_naming_it(tmp_path, capsys):
    """Before: a UnicodeDecodeError whose one-line message named no file. Now the csv is read as Latin-1 and a
    warning names the file and the line of the first byte that is not UTF-8."""
    path = tmp_path / "x.csv"
    path.write_bytes("id,filename,label\n0,a.jpg,1\n1,caf\u00e9.jpg,2\n".encode("latin-1"))
    rows = read_image_csv(path)
    assert [r.filename for r in rows] == ["a.jpg", "caf\u00e9.jpg"] and [r.label for r in rows] == [1, 2]
    assert "warning: csv {} is not UTF-8 (line 3: byte 0xe9); reading it as Latin-1".format(path) in \
        capsys.readouterr().err
    path.write_bytes("\ufeffid,filename,label\n0,caf\u00e9.jpg,1\n".encode("utf-8"))  # UTF-8: no warning
    assert [r.filename for r in read_image_csv(path)] == ["caf\u00e9.jpg"] and capsys.readouterr().err == ""


def test_duplicate_ids_only_warn_at_inference(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("id,filename,label\n0,a.jpg,\n0,b.jpg,\n")
    assert len(read_image_csv(path, duplicates="warn")) == 2
    assert "warning: csv {} lines 2 and 3: duplicate id '0'".format(path) in capsys.readouterr().err


def test_missing_csv_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="csv not found: .*nope.csv"):
        read_image_csv(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*_sat.jpg images in .*empty"):
        SegmentationDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no .jpg/.png images in .*empty"):
        UnlabeledImages(tmp_path / "empty")


# ---------------------------------------------------------------- signals and kills

def _start(args, out_marker="epoch 1/"):
    """Start a trainer; return the process once its output shows ``out_marker`` (training is under way)."""
    proc = subprocess.Popen([sys.executable] + args, cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if out_marker in line:
            return proc, seen
    proc.wait()
    raise AssertionError("never saw {!r}: {}\n{}".format(out_marker, "".join(seen), proc.stderr.read()))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_exits_cleanly_and_resumes(toy_p2, tmp_path, sig):
    out = tmp_path / "run"
    args = ["p2_unet.py", "--data-dir", str(toy_p2), "--output-dir", str(out), "--epochs", "6"] + UNET
    proc, _ = _start(args)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + int(sig), stderr
    assert "{} received".format(sig.name) in stderr and "Run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    ckpt = load_checkpoint(out / "checkpoint.pth", "p2_segmentation")
    assert ckpt["partial_steps"] >= 1 and ckpt["epoch"] >= 1
    interrupted_epoch, done = ckpt["epoch"] + 1, ckpt["partial_steps"]
    steps_per_epoch = 24 // 2
    assert ckpt["step"] == ckpt["epoch"] * steps_per_epoch + done  # saved after a whole step
    # resume: the rest of the interrupted epoch, then the remaining epochs; every epoch logged once
    proc2 = subprocess.run([sys.executable] + args, cwd=str(ROOT), env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert proc2.returncode == 0, proc2.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[interrupted_epoch - 1]["batches"] == steps_per_epoch - done
    final = load_checkpoint(out / "checkpoint.pth", "p2_segmentation")
    assert final["step"] == 6 * steps_per_epoch and "partial_steps" not in final


def _interrupt_then_resume(args, sig, kind, steps_per_epoch, epochs):
    """Signal a run once training is under way, check its mid-epoch checkpoint, rerun it to the end; returns the
    output folder's final checkpoint."""
    out = Path(args[args.index("--output-dir") + 1])
    proc, _ = _start(args)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + int(sig), stderr
    ckpt = load_checkpoint(out / "checkpoint.pth", kind)
    assert ckpt["partial_steps"] >= 1 and ckpt["step"] == ckpt["epoch"] * steps_per_epoch + ckpt["partial_steps"]
    proc2 = subprocess.run([sys.executable] + args, cwd=str(ROOT), env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert proc2.returncode == 0, proc2.stderr
    final = load_checkpoint(out / "checkpoint.pth", kind)
    assert final["step"] == epochs * steps_per_epoch and "partial_steps" not in final
    return final


def test_dino_sigterm_saves_and_resumes(tmp_path):
    root = make_p1_data(tmp_path, mini_size=32, num_classes=2, mini_per_class=16, office_train_per_class=1,
                        office_val_per_class=1)
    out = tmp_path / "dino"
    args = ["p1_ssl_pretrain.py", "--data-dir", str(root / "mini" / "train"), "--output-dir", str(out),
            "--epochs", "8", "--batch-size", "2", "--workers", "0", "--arch", "resnet18", "--out-dim", "32",
            "--hidden-dim", "32", "--bottleneck-dim", "16", "--global-crop-size", "32", "--local-crop-size", "16",
            "--local-crops-number", "1", "--warmup-epochs", "1", "--print-freq", "1"]
    _interrupt_then_resume(args, signal.SIGTERM, "p1_dino", steps_per_epoch=16, epochs=8)
    assert (out / "backbone.pth").is_file()


def test_dino_batched_aug_resumed_mid_epoch_ends_like_an_uninterrupted_run(tmp_path):
    """--batched-aug draws each step's views from (seed, step, rank): a SIGTERM mid-epoch and a resume give the
    same teacher and center as a run that was never stopped."""
    root = make_p1_data(tmp_path, mini_size=32, num_classes=2, mini_per_class=16, office_train_per_class=1,
                        office_val_per_class=1)
    base = ["p1_ssl_pretrain.py", "--data-dir", str(root / "mini" / "train"), "--epochs", "3", "--batch-size", "2",
            "--workers", "0", "--arch", "resnet18", "--out-dim", "32", "--hidden-dim", "32", "--bottleneck-dim",
            "16", "--global-crop-size", "32", "--local-crop-size", "16", "--local-crops-number", "1",
            "--warmup-epochs", "1", "--print-freq", "1", "--batched-aug", "--deterministic"]
    subprocess.run([sys.executable] + base + ["--output-dir", str(tmp_path / "full")], cwd=str(ROOT), env=_env(),
                   check=True, capture_output=True, timeout=600)
    resumed = _interrupt_then_resume(base + ["--output-dir", str(tmp_path / "stopped")], signal.SIGTERM, "p1_dino",
                                     steps_per_epoch=16, epochs=3)
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pth", "p1_dino")
    assert all(torch.equal(full["teacher"][k], resumed["teacher"][k]) for k in full["teacher"])
    assert torch.equal(full["center"], resumed["center"])


def _final_state(out: Path):
    ckpt = load_safe(out / "checkpoint.pth")
    return ckpt["model"], json.loads((out / "results.json").read_text())


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(toy_p2, tmp_path):
    base = ["p2_unet.py", "--data-dir", str(toy_p2), "--epochs", "4", "--deterministic", "--seed", "3"] + UNET
    subprocess.run([sys.executable] + base + ["--output-dir", str(tmp_path / "full")], cwd=str(ROOT), env=_env(),
                   check=True, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    proc, _ = _start(base + ["--output-dir", str(killed)], out_marker="epoch 2/")
    proc.send_signal(signal.SIGKILL)  # no handler runs: whatever was last written atomically must be whole
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoint.pth", "p2_segmentation")["epoch"] >= 2
    subprocess.run([sys.executable] + base + ["--output-dir", str(killed)], cwd=str(ROOT), env=_env(), check=True,
                   capture_output=True, timeout=600)
    (w_full, r_full), (w_killed, r_killed) = _final_state(tmp_path / "full"), _final_state(killed)
    assert all(torch.equal(w_full[k], w_killed[k]) for k in w_full)
    assert r_full["best_miou"] == r_killed["best_miou"] and r_full["last_iou"] == r_killed["last_iou"]


def test_out_of_memory_names_the_flags_to_lower(monkeypatch, capsys):
    import argparse

    from utils.cli import run_cli

    def main(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit) as info:
        run_cli(main, argparse.ArgumentParser())
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)")
    assert "--batch-size" in err and "--local-crops-number" in err and "--crop-size" in err
    assert len(err.strip().splitlines()) == 1  # the README's one line
    from utils.cli import is_out_of_memory

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("allocation failed"))  # the type decides, not the words
    # a main that stops with SystemExit("error: ...") prints that line and exits 2, as a bad input does
    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit) as info:
        run_cli(lambda a: (_ for _ in ()).throw(SystemExit("error: no backbone at x.pth")), argparse.ArgumentParser())
    assert info.value.code == 2 and capsys.readouterr() == ("", "error: no backbone at x.pth\n")
    # other runtime errors are not disguised as out-of-memory
    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_cli(lambda a: (_ for _ in ()).throw(RuntimeError("shape mismatch")), argparse.ArgumentParser())


def _numpy_memory_error():
    np.empty((1 << 50,), dtype=np.uint8)  # 1 PiB: numpy's own _ArrayMemoryError (a MemoryError)


def _raise(exc):
    def main(args):
        raise exc
    return main


@pytest.mark.parametrize("main, first_line", [
    (_raise(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                         "memory: you tried to allocate 200000000 bytes. Error code 12 (Cannot allocate memory)")),
     "DefaultCPUAllocator: can't allocate memory"),
    (lambda args: _numpy_memory_error(), "Unable to allocate"),
    (_raise(MemoryError()), "(MemoryError)"),  # what PIL raises when its image buffer cannot be allocated
    (_raise(OSError(12, "Cannot allocate memory")), "Cannot allocate memory"),
    (_raise(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")), "is killed by signal"),
])
def test_host_out_of_memory_is_one_line_and_exit_3(monkeypatch, capsys, main, first_line):
    """Before: CPU allocator failures ended in a traceback (torch's RuntimeError, numpy's _ArrayMemoryError) or as
    exit 2 (ENOMEM). Now every one is the one-line hint and exit 3; a message merely mentioning memory is not."""
    import argparse

    from utils.cli import run_cli

    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit) as info:
        run_cli(main, argparse.ArgumentParser())
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and first_line in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        run_cli(_raise(ValueError("csv x.csv line 2: 'out of memory' is not a file name")), argparse.ArgumentParser())
    assert info.value.code == 2


def test_pil_out_of_memory_while_decoding_is_not_a_damaged_image(toy_p2, tmp_path, monkeypatch, capsys):
    """Before: read_rgb turned PIL's MemoryError into 'cannot read image' (a damaged file, exit 1). Now the
    MemoryError reaches run_cli: out of memory, exit 3."""
    import p2_inference
    from utils import datasets
    from utils.cli import run_cli

    def open_without_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(datasets.Image, "open", open_without_memory)
    with pytest.raises(MemoryError):
        datasets.read_rgb(toy_p2 / "validation" / "0000_sat.jpg")
    with pytest.raises(SystemExit) as info:
        run_cli(p2_inference.main, p2_inference.get_args_parser(),
                ["--input-dir", str(toy_p2 / "validation"), "--output-dir", str(tmp_path / "out"), "--checkpoint",
                 str(_tiny_unet(tmp_path)), "--device", "cpu", "--workers", "0"])
    assert info.value.code == 3 and capsys.readouterr().err.startswith("error: out of memory (MemoryError)")


def _tiny_unet(folder: Path, base_width: int = 4) -> Path:
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.models import build_seg_model
    from utils.predict import SEG_KIND

    config = {"arch": "unet", "num_classes": 7, "base_width": base_width, "depth": 2, "drop_skip": [],
              "bilinear": False}
    torch.manual_seed(0)
    path = folder / "unet{}.pth".format(base_width)
    save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict(), None), path)
    return path


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux's prlimit")
def test_real_host_out_of_memory_in_p2_inference_is_one_line_and_exit_3(tmp_path):
    """Before: `prlimit --as=4500000000 python p2_inference.py` on a 2500x2500 image ended in a traceback of torch's
    'DefaultCPUAllocator: can't allocate memory'. Here a 6000x6000 image predicted whole (--tile-threshold above
    it; tiles would fit): it needs ~9.6 GB, over the limit whatever torch's own footprint. Measured: 4 s of CPU,
    7-35 s wall on 2 shared cores (torch's import)."""
    in_dir = tmp_path / "big"
    in_dir.mkdir()
    Image.new("RGB", (6000, 6000), (90, 120, 60)).save(str(in_dir / "0000_sat.jpg"))
    proc = subprocess.run(["prlimit", "--as=4500000000", sys.executable, "p2_inference.py", "--input-dir",
                           str(in_dir), "--output-dir", str(tmp_path / "out"), "--checkpoint",
                           str(_tiny_unet(tmp_path, base_width=8)), "--device", "cpu", "--workers", "0",
                           "--tile-threshold", "8000"], cwd=str(ROOT), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: out of memory (") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not list((tmp_path / "out").glob("*"))


# ---------------------------------------------------------------- output safety and determinism

def test_inference_refuses_to_write_into_its_inputs(toy_p2, tmp_path):
    val = _copy_split(toy_p2 / "validation", tmp_path / "val")
    before = {p.name: p.read_bytes() for p in val.iterdir()}
    proc = subprocess.run([sys.executable, "p2_inference.py", "--input-dir", str(val), "--output-dir", str(val),
                           "--checkpoint", str(tmp_path / "unused.pth")], cwd=str(ROOT), env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert {p.name: p.read_bytes() for p in val.iterdir()} == before  # the ground-truth masks are untouched
    csv = tmp_path / "in.csv"
    csv.write_text("id,filename,label\n0,a.jpg,\n")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(str(tmp_path / "imgs" / "a.jpg"))
    proc = subprocess.run([sys.executable, "p1_inference.py", "--csv", str(csv), "--image-dir", str(tmp_path / "imgs"),
                           "--output", str(csv), "--checkpoint", str(tmp_path / "unused.pth")], cwd=str(ROOT),
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is the input csv" in proc.stderr
    assert csv.read_text() == "id,filename,label\n0,a.jpg,\n"


@pytest.mark.parametrize("script, extra", [
    ("p2_unet.py", ["--epochs", "2"] + UNET),
    ("p1_ssl_pretrain.py", ["--epochs", "2", "--batch-size", "4", "--workers", "0", "--arch", "resnet18",
                            "--out-dim", "32", "--hidden-dim", "32", "--bottleneck-dim", "16",
                            "--global-crop-size", "32", "--local-crop-size", "16", "--local-crops-number", "2"]),
])
def test_deterministic_runs_are_bit_identical(toy_p2, tmp_path, script, extra):
    if script == "p1_ssl_pretrain.py":
        data = make_p1_data(tmp_path / "d", mini_size=32, num_classes=2, mini_per_class=8,
                            office_train_per_class=1, office_val_per_class=1) / "mini" / "train"
    else:
        data = toy_p2
    states = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, script, "--data-dir", str(data), "--output-dir", str(tmp_path / name),
                        "--seed", "5", "--deterministic"] + extra, cwd=str(ROOT), env=_env(), check=True,
                       capture_output=True, timeout=600)
        states.append(load_safe(tmp_path / name / "checkpoint.pth"))
    a, b = states
    key = "model" if "model" in a else "student"
    assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    if key == "student":
        assert all(torch.equal(a["teacher"][k], b["teacher"][k]) for k in a["teacher"])
        assert torch.equal(a["center"], b["center"])


# ---------------------------------------------------------------- bounded memory at inference

# The child imports torch and torchvision, resets its peak RSS (VmHWM, Linux >= 4.0) and only then runs the script:
# importing them peaks ~130 MB above where it settles, a ceiling under which a leak of that size would hide.
_PEAK_WRAPPER = """
import re, runpy, sys
import torch, torchvision
try:
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
except OSError:  # a sandbox without it: the peak then includes the import, and only larger leaks show
    pass
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as exc:
    assert not exc.code, exc.code
with open('/proc/self/status') as f:
    print('VmHWM', re.search(r'VmHWM:\\s+(\\d+) kB', f.read()).group(1))
"""


def _peak_rss_mb(cmd) -> float:
    """Peak RSS (MB) of running ``cmd`` (a python script and its arguments) after torch's import.

    glibc's malloc moves its mmap threshold up as large blocks are freed, after which freed image buffers stay in
    the heap; when that happens depends on thread timing, so the peak of the same run varied by up to ~50 MB
    (p1 inference, 100 images: 797-843 MB over 5 runs; CI once saw 100 -> 840 MB, 1000 -> 886 MB). A fixed
    threshold returns every freed large block at once: the same runs then agree within ~5 MB, and what is left
    to measure is memory the program really keeps.
    """
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads the peak RSS (VmHWM) from Linux's /proc/self/status")
    out = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER] + cmd, cwd=str(ROOT),
                         env=_env(MALLOC_MMAP_THRESHOLD_="131072"), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1].split()[1]) / 1024.0


def test_p2_inference_memory_does_not_grow_with_the_number_of_images(toy_p2, tmp_path):
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.models import build_seg_model
    from utils.predict import SEG_KIND

    config = {"arch": "unet", "num_classes": 7, "base_width": 8, "depth": 2, "drop_skip": [], "bilinear": False}
    ckpt = tmp_path / "unet.pth"
    save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict(), None), ckpt)
    sat = Image.open(str(toy_p2 / "validation" / "0000_sat.jpg")).resize((128, 128))
    for n in (100, 1000):
        folder = tmp_path / "in{}".format(n)
        folder.mkdir()
        for i in range(n):
            sat.save(str(folder / "{:04d}_sat.jpg".format(i)))
    rss = {}
    for n in (100, 1000):
        out = tmp_path / "out{}".format(n)
        rss[n] = _peak_rss_mb(["p2_inference.py", "--input-dir", str(tmp_path / "in{}".format(n)),
                               "--output-dir", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
                               "--workers", "0"])
        assert len(list(out.glob("*_mask.png"))) == n and len(list(out.iterdir())) == n
    # Measured growth 100 -> 1000 images: 0.2-0.3 MB. Keeping each input tensor (900 x 49 KB) grew it by 43 MB;
    # masks, logits or decoded images kept would add more.
    assert rss[1000] - rss[100] < 20, rss


def test_p1_inference_memory_does_not_grow_with_the_number_of_images(tmp_path):
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.classify import build_classifier

    config = {"arch": "resnet18", "num_classes": 65, "hidden_dim": 16, "dropout": 0.0}
    ckpt = tmp_path / "p1.pth"
    save_atomic(make_checkpoint("p1_classifier", config, build_classifier(config).state_dict(), None,
                                image_size=32), ckpt)
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(str(images / "0.jpg"))
    data = (images / "0.jpg").read_bytes()
    for i in range(1, 1000):  # 1,000 decoded 256 px images would hold ~200 MB if kept
        (images / "{}.jpg".format(i)).write_bytes(data)
    rss = {}
    for n in (100, 1000):
        csv = tmp_path / "in{}.csv".format(n)
        csv.write_text("id,filename,label\n" + "".join("{},{}.jpg,\n".format(i, i) for i in range(n)))
        out = tmp_path / "out{}.csv".format(n)
        rss[n] = _peak_rss_mb(["p1_inference.py", "--csv", str(csv), "--image-dir", str(images),
                               "--output", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
                               "--workers", "0"])
        assert len(out.read_text().splitlines()) == n + 1
    # Measured growth 100 -> 1000 images: 3.8-4.3 MB; keeping each decoded image grew it by ~170 MB.
    assert rss[1000] - rss[100] < 20, rss


def test_finetune_sigint_saves_and_resumes(tmp_path):
    root = make_p1_data(tmp_path, mini_size=32, num_classes=2, mini_per_class=0, office_train_per_class=24,
                        office_val_per_class=2)
    out = tmp_path / "ft"
    args = ["p1_finetune.py", "--setting", "A", "--data-dir", str(root / "office"), "--output-dir", str(out),
            "--epochs", "6", "--batch-size", "2", "--image-size", "32", "--workers", "0", "--num-classes", "2",
            "--arch", "resnet18", "--hidden-dim", "16", "--warmup-epochs", "0", "--print-freq", "1"]
    _interrupt_then_resume(args, signal.SIGINT, "p1_classifier", steps_per_epoch=24, epochs=6)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_p2_inference_memory_of_a_large_image_is_bounded_by_its_tiles(tmp_path):
    """Before: a large image went through the model whole (6000x6000, tiny U-Net: 9.6 GB peak, 51 s CPU). Now it is
    predicted in tiles (6000x6000 with the default 1024 px tiles: 1.35 GB, 31 s CPU; the masks agreed on every
    pixel). Here at 2000x2000: the same image whole (--tile-threshold above it) and in 512 px tiles."""
    in_dir = tmp_path / "big"
    in_dir.mkdir()
    small = np.random.default_rng(0).integers(0, 255, (125, 125, 3), dtype=np.uint8)
    Image.fromarray(small).resize((2000, 2000), Image.BILINEAR).save(str(in_dir / "0000_sat.jpg"))
    ckpt = _tiny_unet(tmp_path, base_width=8)
    rss = {}
    for name, flags in (("whole", ["--tile-threshold", "4000"]), ("tiled", ["--tile-threshold", "1024",
                                                                          "--tile-size", "512"])):
        rss[name] = _peak_rss_mb(["p2_inference.py", "--input-dir", str(in_dir), "--output-dir",
                                  str(tmp_path / name), "--checkpoint", str(ckpt), "--device", "cpu",
                                  "--workers", "0"] + flags)
        assert Image.open(tmp_path / name / "0000_mask.png").size == (2000, 2000)
    # Measured: whole 1686 MB, tiled 820 MB; a 64x64 image peaks at 701 MB (torch, the model): +985 vs +119 MB
    assert rss["whole"] - rss["tiled"] > 500, rss


def test_the_out_of_memory_line_offers_a_resume_only_to_trainers(monkeypatch, capsys):
    """A trainer keeps its last checkpoint and resumes; inference starts over: its line names what to lower
    (--batch-size, --tile-size, --device cpu) and never a resume. Ctrl-C: one line and 130 for inference; a
    trainer's KeyboardInterrupt (its second signal) still aborts at once."""
    import argparse

    from utils.cli import run_cli

    oom = _raise(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    lines = {}
    for inference in (False, True):
        monkeypatch.setattr(sys, "argv", ["x"])
        with pytest.raises(SystemExit) as info:
            run_cli(oom, argparse.ArgumentParser(), inference=inference)
        assert info.value.code == 3
        lines[inference] = capsys.readouterr().err
        assert len(lines[inference].strip().splitlines()) == 1
    assert "run the same command again to resume" in lines[False]
    assert "resume" not in lines[True] and "checkpoint" not in lines[True]
    assert all(flag in lines[True] for flag in ("--batch-size", "--tile-size", "--device cpu", "--workers"))
    with pytest.raises(SystemExit) as info:
        run_cli(_raise(KeyboardInterrupt()), argparse.ArgumentParser(), [], inference=True)
    assert info.value.code == 130 and capsys.readouterr().err.startswith("interrupted (Ctrl-C)")
    with pytest.raises(KeyboardInterrupt):
        run_cli(_raise(KeyboardInterrupt()), argparse.ArgumentParser(), [])
