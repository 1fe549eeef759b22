"""Tests for utils/checkpoint.py: atomic writes, safe (weights_only) loads, self-describing checkpoints."""
import argparse
import io
import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import checkpoint
from utils.checkpoint import FORMAT_VERSION, load_checkpoint, load_safe, make_checkpoint, plain, save_atomic


def _sample():
    return {
        "weights": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "ints": torch.tensor([1, 2, 3], dtype=torch.int64),
        "epoch": 7,
        "lr": 0.125,
        "name": "unet",
        "history": [0.5, 0.25, [1, "two"]],
        "nested": {"a": torch.ones(2), "b": None, "c": True},
    }


def _assert_same(a, b):
    assert type(a) is type(b) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def _valid_bytes(tmp_path):
    path = tmp_path / "valid_source.pt"
    torch.save(_sample(), str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def test_save_atomic_load_safe_round_trip(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"  # the parent folder is created
    obj = _sample()
    save_atomic(obj, path)
    assert path.is_file()
    _assert_same(load_safe(path), obj)
    assert sorted(os.listdir(str(path.parent))) == ["ckpt.pt"]  # no temp file left behind

    # overwrite in place: still one file, new content
    obj2 = {"epoch": 8}
    save_atomic(obj2, str(path))
    assert load_safe(str(path)) == obj2
    assert sorted(os.listdir(str(path.parent))) == ["ckpt.pt"]


@pytest.mark.parametrize("exc_type, raised", [(RuntimeError, OSError), (KeyboardInterrupt, KeyboardInterrupt)])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, exc_type, raised):
    path = tmp_path / "ckpt.pt"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    calls = []

    def broken_save(obj, f, *args, **kwargs):
        calls.append(1)
        f.write(b"PK\x03\x04 partial bytes")  # part of a zip header, then die
        raise exc_type("[enforce fail at inline_container.cc:603] . unexpected pos 576 vs 490")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    # torch.save reports a full disk as a RuntimeError ("unexpected pos ..."): it becomes an OSError naming the file
    with pytest.raises(raised, match=None if raised is KeyboardInterrupt else "cannot write .*ckpt.pt"):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()

    assert calls == [1]  # the patched save was really used
    assert path.read_bytes() == before
    loaded = load_safe(path)
    assert loaded["epoch"] == 1
    assert torch.equal(loaded["w"], torch.ones(3))
    assert sorted(os.listdir(str(tmp_path))) == ["ckpt.pt"]


class _WritesMarker:
    """Unpickling this runs ``Path.write_text(marker, 'pwned')``: harmless, but code execution all the same."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch '{}'".format(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_WritesMarker, _RunsShell])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_code_running_pickle_is_refused(tmp_path, payload, writer):
    marker = tmp_path / "marker"
    control_marker = tmp_path / "control_marker"
    evil, control = tmp_path / "evil.pt", tmp_path / "control.pt"
    for path, target in ((evil, marker), (control, control_marker)):
        obj = {"model": {"w": torch.ones(2)}, "payload": payload(str(target))}
        if writer == "torch":
            torch.save(obj, str(path))
        else:
            with open(str(path), "wb") as f:
                pickle.dump(obj, f)

    with pytest.raises(ValueError) as info:
        load_safe(evil)
    assert str(evil) in str(info.value)
    assert not marker.exists()
    with pytest.raises(ValueError):
        load_checkpoint(evil)
    assert not marker.exists()

    # control: the same payload does run when loaded unsafely, so the test above is meaningful
    if writer == "torch":
        torch.load(str(control), map_location="cpu", weights_only=False)
    else:
        with open(str(control), "rb") as f:
            pickle.load(f)
    assert control_marker.exists()


def test_truncated_checkpoint(tmp_path):
    data = _valid_bytes(tmp_path)
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as info:
        load_safe(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError) as info:
        load_safe(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"hello world", b"\x80\x02}q\x00.", b"PK\x03\x04", b"\x00" * 64])
def test_junk_files(tmp_path, content):
    # a text file, a pickle cut after its header, a zip header alone, zeros
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_safe(path)
    assert str(path) in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_safe(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "missing.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_safe(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)


def _state():
    return {"conv.weight": torch.randn(2, 3), "conv.bias": torch.zeros(2)}


def test_make_and_load_checkpoint_right_kind(tmp_path):
    args = argparse.Namespace(data=Path("/data/p2"), crop=(256, 256), lr=1e-3, epochs=3, note=None, amp=True)
    state = _state()
    ckpt = make_checkpoint("p2_unet", {"arch": "unet", "skips": (True, False)}, state, args, epoch=3,
                           best_miou=0.5)
    path = tmp_path / "unet.pt"
    save_atomic(ckpt, path)
    loaded = load_checkpoint(path, expected_kind="p2_unet")
    assert loaded["kind"] == "p2_unet"
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["model_config"] == {"arch": "unet", "skips": [True, False]}
    assert loaded["args"] == {"data": "/data/p2", "crop": [256, 256], "lr": 1e-3, "epochs": 3, "note": None,
                              "amp": True}
    assert loaded["epoch"] == 3 and loaded["best_miou"] == 0.5
    for key, value in state.items():
        assert torch.equal(loaded["model"][key], value)
    # expected_kind=None accepts any kind
    assert load_checkpoint(path)["kind"] == "p2_unet"


def test_load_checkpoint_wrong_kind(tmp_path):
    path = tmp_path / "deeplab.pt"
    save_atomic(make_checkpoint("p2_deeplab", {"arch": "deeplabv3"}, _state()), path)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_kind="p1_classifier")
    message = str(info.value)
    assert "p2_deeplab" in message and "p1_classifier" in message
    assert str(path) in message


def test_bare_state_dict_is_not_our_checkpoint(tmp_path):
    path = tmp_path / "resnet50.pt"
    torch.save(_state(), str(path))
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_kind="p2_unet")
    message = str(info.value)
    assert "not a checkpoint written by this project" in message
    assert str(path) in message


def test_future_format_version(tmp_path):
    path = tmp_path / "future.pt"
    ckpt = make_checkpoint("p2_unet", {}, _state())
    ckpt["format_version"] = FORMAT_VERSION + 1
    save_atomic(ckpt, path)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_kind="p2_unet")
    assert str(info.value) == "{} has checkpoint format {}, newer than this code's {}: update the code".format(
        path, FORMAT_VERSION + 1, FORMAT_VERSION)


def _only_plain_types(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain_types(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_plain_converts_argparse_values():
    args = argparse.Namespace(out=Path("runs/x"), size=(128, 128), nested={"p": Path("a/b"), 1: (Path("c"),)},
                              device=torch.device("cpu"), flag=False, count=2, rate=0.5, name="n", none=None)
    result = plain(args)
    assert _only_plain_types(result)
    assert result == {"out": str(Path("runs/x")), "size": [128, 128],
                      "nested": {"p": str(Path("a/b")), "1": [str(Path("c"))]},
                      "device": "cpu", "flag": False, "count": 2, "rate": 0.5, "name": "n", "none": None}
    # and it loads with weights_only=True
    buffer = io.BytesIO()
    torch.save(result, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == result


def test_atomic_write_makes_folders_fsyncs_before_the_rename_and_keeps_the_umask(tmp_path, monkeypatch):
    """The file's bytes are fsynced before the rename and the folder after it; the file gets the usual permissions
    (0o666 minus the umask, not mkstemp's 0o600); the process umask and open descriptors are as before."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync dir" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", None))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    old_umask = os.umask(0o022)
    try:
        fds = len(os.listdir("/proc/self/fd")) if sys.platform.startswith("linux") else None
        path = tmp_path / "a" / "b" / "ckpt.pt"  # missing parents are made
        save_atomic(_sample(), path)
        text = tmp_path / "log.txt"
        checkpoint.atomic_write(text, lambda f: f.write("a line\n"), text=True)  # buffered until flushed
        assert os.umask(0o022) == 0o022  # unchanged by the calls
        if fds is not None:
            assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        os.umask(old_umask)
    assert [kind for kind, _ in events] == ["fsync file", "replace", "fsync dir"] * 2
    # every byte was written when the file was fsynced
    assert (events[0][1], events[3][1]) == (path.stat().st_size, len("a line\n"))
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(text.stat().st_mode) == 0o644


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        load_safe(tmp_path / "missing.pt")
    (tmp_path / "run").mkdir()  # before: 'checkpoint not found: .../run' for a folder that is there
    with pytest.raises(IsADirectoryError, match=r"checkpoint .*run is a folder, not a file: give the \.pth inside"):
        load_safe(tmp_path / "run")
    cases = {"empty.pt": (b"", r"is empty \(0 bytes\)$"),
             "one_byte.pt": (b"x", r"corrupt, truncated or not a torch file$"),
             "zeros.pt": (b"\x00" * 64, r"corrupt, truncated or not a torch file$"),
             # a cut plain pickle: torch 2.4's weights-only unpickler raises UnpicklingError (not a zip: "not a torch
             # file"), newer torch another error whose type and first line are given
             "pickle_cut.pt": (b"\x80\x02}q\x00.", r"(corrupt or truncated \(\w+: .+\)|corrupt, truncated or not a "
                                                   r"torch file)$")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            load_safe(tmp_path / name)
        assert "\n" not in str(info.value), name
    # code in a torch zip is refused with the first line of torch's reason; in a plain pickle it is not a torch file
    torch.save({"payload": _WritesMarker(str(tmp_path / "marker"))}, str(tmp_path / "evil.pt"))
    with pytest.raises(ValueError, match="refusing to load .*details: Weights only load failed") as info:
        load_safe(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    with open(str(tmp_path / "evil.pkl"), "wb") as f:
        pickle.dump({"payload": _WritesMarker(str(tmp_path / "marker"))}, f)
    with pytest.raises(ValueError, match="corrupt, truncated or not a torch file$"):
        load_safe(tmp_path / "evil.pkl")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("content", [{"model": {}}, {"format_version": 1}, [1, 2], torch.ones(2)],
                         ids=["no-version", "no-model", "list", "tensor"])
def test_what_is_not_our_checkpoint_is_refused(tmp_path, content):
    torch.save(content, str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="not a checkpoint written by this project"):
        load_checkpoint(tmp_path / "x.pt")


def test_format_1_checkpoints_stay_loadable(tmp_path):
    """Checkpoints already published are format 1: the loader must keep accepting them."""
    torch.save({"format_version": 1, "kind": "p2_unet", "model_config": {}, "model": {}}, str(tmp_path / "v1.pt"))
    assert load_checkpoint(tmp_path / "v1.pt", "p2_unet")["format_version"] == 1


def test_load_model_rebuilds_from_the_config_alone(tmp_path):
    torch.manual_seed(0)
    trained = torch.nn.Linear(3, 2)
    save_atomic(make_checkpoint("lin", {"arch": "linear", "inputs": 3}, trained.state_dict()), tmp_path / "a.pt")
    build = lambda config: torch.nn.Linear(config["inputs"], 2)  # noqa: E731
    model, ckpt = checkpoint.load_model(tmp_path / "a.pt", "lin", build, torch.device("cpu"))
    assert not model.training and ckpt["model_config"] == {"arch": "linear", "inputs": 3}
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    save_atomic(make_checkpoint("lin", {"arch": "linear", "inputs": 4}, trained.state_dict()), tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"b.pt does not fit the model its config describes \(linear\): "
                                         r"missing \[\], unexpected \[\], other shapes \['weight'\]"):
        checkpoint.load_model(tmp_path / "b.pt", "lin", build, torch.device("cpu"))


def test_a_model_entry_holding_a_non_tensor_is_refused(tmp_path):
    """A 'model' dict whose values are not all tensors (here one list) is not a state_dict."""
    ckpt = make_checkpoint("lin", {"arch": "linear"}, {"weight": torch.zeros(2), "bias": [0.0, 1.0]})
    save_atomic(ckpt, tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt: its 'model' entry is not a state_dict \(names -> tensors\)"):
        load_checkpoint(tmp_path / "list.pt")


def test_errors_name_at_most_three_tensors_and_the_first_line_of_the_cause(tmp_path):
    """Five NaN tensors or five unexpected keys: the message names the first three (sorted) and counts them all; a
    config the builder cannot use is named with the first line of the builder's error."""
    nan = {"t{}".format(i): torch.full((2,), float("nan")) for i in range(5)}
    with pytest.raises(ValueError, match=r"in 5 tensor\(s\), e\.g\. t0, t1, t2: the run"):
        checkpoint.check_finite(nan, tmp_path / "x.pt")
    weights = dict(torch.nn.Linear(3, 2).state_dict(), **{"extra{}".format(i): torch.zeros(1) for i in range(5)})
    save_atomic(make_checkpoint("lin", {"arch": "linear"}, weights), tmp_path / "extra.pt")
    build = lambda config: torch.nn.Linear(3, 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['extra0', 'extra1', 'extra2'\], other shapes"):
        checkpoint.load_model(tmp_path / "extra.pt", "lin", build, torch.device("cpu"))

    def refuse(config):
        raise ValueError("no such architecture: linear\nsecond line")

    with pytest.raises(ValueError, match=r"does not describe a model: no such architecture: linear$"):
        checkpoint.load_model(tmp_path / "extra.pt", "lin", refuse, torch.device("cpu"))


def test_a_runtime_error_that_is_not_a_full_disk_stays_itself(tmp_path, monkeypatch):
    """Only torch.save's full-disk messages become 'cannot write ... (disk full?)'; any other RuntimeError of the
    writer propagates unchanged, and the previous file is kept."""
    path = tmp_path / "ckpt.pt"
    save_atomic({"w": torch.ones(1)}, path)

    def broken_save(obj, f, *args, **kwargs):
        raise RuntimeError("a bug in the object being saved")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="^a bug in the object being saved$"):
        save_atomic({"w": torch.zeros(1)}, path)
    monkeypatch.undo()
    assert torch.equal(load_safe(path)["w"], torch.ones(1)) and os.listdir(str(tmp_path)) == ["ckpt.pt"]


def test_six_tensors_of_other_shapes_are_named_three(tmp_path):
    build = lambda config: torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(3)])  # noqa: E731
    wrong = {k: torch.zeros(1) for k in build({}).state_dict()}
    save_atomic(make_checkpoint("seq", {"arch": "seq"}, wrong), tmp_path / "shapes.pt")
    with pytest.raises(ValueError, match=r"other shapes \['0\.bias', '0\.weight', '1\.bias'\]$"):
        checkpoint.load_model(tmp_path / "shapes.pt", "seq", build, torch.device("cpu"))


@pytest.mark.parametrize("error, shown", [(EOFError(), "(EOFError)"), (KeyError(), "(KeyError)"),
                                          (RuntimeError("PytorchStreamReader failed\nmore"),
                                           "(RuntimeError: PytorchStreamReader failed)")])
def test_a_load_error_is_named_by_its_type_and_first_line_even_without_a_message(tmp_path, monkeypatch, error,
                                                                                    shown):
    path = tmp_path / "ckpt.pt"
    save_atomic({"w": torch.ones(1)}, path)

    def broken_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(checkpoint.torch, "load", broken_load)
    with pytest.raises(ValueError) as info:
        load_safe(path)
    assert str(info.value) == "cannot load checkpoint {}: corrupt or truncated {}".format(path, shown)


def test_a_file_name_near_the_limit_is_written_and_its_temp_name_maps_back(tmp_path):
    """Before: a legal 248-character image name failed with 'File name too long' (the temp name was the name plus
    14 characters) and stopped the run. The temp name's middle is cut; it still ends as the target does, so a
    leftover temp file of a mask is recognised as one."""
    name = "x" * 239 + "_mask.png"  # 248 characters
    checkpoint.atomic_write(tmp_path / name, lambda f: f.write(b"png"))
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"png"
    prefix = checkpoint._temp_prefix(name)
    assert len((prefix + "abcdefgh.tmp").encode()) <= 255
    assert checkpoint.atomic_temp_target(prefix + "abcdefgh.tmp").endswith("_mask.png")
    assert checkpoint._temp_prefix("0000_mask.png") == ".0000_mask.png."  # short names as before


def test_write_atomic_replaces_only_files_of_its_kind(tmp_path):
    """utils.fileio.write_atomic, the one way the project writes: an existing file is replaced only when it starts
    as the project's files of that kind do (by suffix, or the caller's signature), or is empty; an input of the
    command (also through a link) and a folder reached through a symlink are refused; nothing is changed."""
    from utils.fileio import NotOurs, write_text

    ckpt = tmp_path / "model.pth"
    save_atomic(_sample(), ckpt)
    kept = ckpt.read_bytes()
    for target, check in [(ckpt, {"signature": b"id,filename,label"}),  # a csv written over a checkpoint
                          (tmp_path / "link.csv", {"inputs": [ckpt]}),  # the same file through a link
                          (tmp_path / "results.json", {})]:  # a .json that is not a JSON object
        if target.name == "link.csv":
            target.symlink_to(ckpt)
        if target.name == "results.json":
            target.write_text("my notes\n")
        before = os.path.realpath(str(target)), open(str(target), "rb").read()
        with pytest.raises(NotOurs, match=str(target.name)):
            write_text(target, "id,filename,label\n", "csv", **check)
        assert open(before[0], "rb").read() == before[1]
    assert ckpt.read_bytes() == kept
    (tmp_path / "mine.txt").write_text("a user's text")  # a suffix without a signature: any content is refused
    with pytest.raises(NotOurs, match="mine.txt"):
        write_text(tmp_path / "mine.txt", "x", "text")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(NotOurs, match="symbolic link"):
        write_text(tmp_path / "run" / "sub" / "a.json", "{}", "json", root=tmp_path / "run")
    assert list(outside.iterdir()) == []
    # what is ours is replaced: a JSON object, an empty file, a csv with the caller's header, a symlink itself
    (tmp_path / "ok.json").write_text('  {"a": 1}')
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "pred.csv").write_text("id,filename,label\n0,a.jpg,1\n")
    for target, check in [(tmp_path / "ok.json", {}), (tmp_path / "empty.txt", {}),
                          (tmp_path / "pred.csv", {"signature": b"id,filename,label"})]:
        write_text(target, "{}", "file", **check)
        assert target.read_text() == "{}"
    (tmp_path / "to_ckpt.pth").symlink_to(ckpt)
    write_text(tmp_path / "to_ckpt.pth", "new", "file", ours=lambda p: True)  # the link is replaced, not followed
    assert not (tmp_path / "to_ckpt.pth").is_symlink() and ckpt.read_bytes() == kept


def test_a_dangling_symlink_output_folder_is_named_not_errno_17(tmp_path):
    """Before: an output folder that is a dangling symlink (or a loop) gave '[Errno 17] File exists'. make_folder,
    which every script's output folder goes through, names the link and its target; a file in the way is named."""
    from utils.fileio import NotOurs, make_folder

    (tmp_path / "out").symlink_to(tmp_path / "gone")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    for name, words in (("out", "gone"), ("loop", "loops"), ("file", "not a folder")):
        with pytest.raises(NotOurs, match=words):
            make_folder(tmp_path / name)
    assert make_folder(tmp_path / "a" / "b").is_dir()
