"""Checkpoint io: atomic writes and safe loads.

Every checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file crafted to run code on unpickling is refused. Writes go to a
temporary file in the same folder, are fsynced, then renamed over the target, so a kill at any moment
leaves the previous checkpoint intact.
"""
import argparse
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

FORMAT_VERSION = 1
PathLike = Union[str, Path]


_TEMP_NAME = re.compile(r"\.(.+)\.[^.]+\.tmp")  # atomic_write's temp files: "." + target name + ".XXXXXXXX.tmp"


def atomic_temp_target(name: str) -> Optional[str]:
    """The name of the file that ``atomic_write``'s temp file ``name`` was for (left behind by a killed run), or
    None when ``name`` is not such a temp file: '.0000_mask.png.k3j9x_2a.tmp' -> '0000_mask.png'."""
    match = _TEMP_NAME.fullmatch(name)
    return match.group(1) if match else None


def _temp_prefix(name: str, limit: int = 255 - 13) -> str:
    """'.' + ``name`` + '.', the middle of a long name cut (keeping its end, e.g. '_mask.png') so that the temp
    file's name (prefix + 8 random characters + '.tmp') stays within the usual 255-byte limit of a file name."""
    prefix = "." + name + "."
    if len(prefix.encode("utf-8")) <= limit:
        return prefix
    head, tail = name, name[-24:]
    while len(("." + head + "~" + tail + ".").encode("utf-8")) > limit:
        head = head[:-1]
    return "." + head + "~" + tail + "."


def atomic_write(path: PathLike, write: Callable[[Any], None], text: bool = False) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file in the same folder, fsync, then os.replace it:
    a kill at any moment leaves either the old file or the new one, and a symlink at ``path`` is replaced, never
    followed. The temp file never outlives the call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=str(path.parent))
    try:
        os.close(fd)  # reopened by name: the file object's ``name`` is the temp file's path, not a number
        with open(tmp, "w" if text else "wb", **({"newline": "", "encoding": "utf-8"} if text else {})) as f:
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            except RuntimeError as exc:  # torch.save reports a full disk as RuntimeError ("unexpected pos ...")
                if not any(s in str(exc) for s in ("unexpected pos", "PytorchStreamWriter", "file write failed")):
                    raise
                raise OSError("cannot write {}: {} (disk full?)".format(path, str(exc).splitlines()[0])) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_atomic(obj: Any, path: PathLike, what: str = "checkpoint", **check: Any) -> None:
    """torch.save ``obj`` to ``path`` through ``utils.fileio.write_atomic`` (``check``: its rules for what may be
    replaced; by default only a torch file)."""
    from utils.fileio import write_atomic

    write_atomic(path, lambda f: torch.save(obj, f), what, **check)


def load_safe(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """torch.load with ``weights_only=True`` and one-line errors for missing, corrupt or unsafe files."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError("checkpoint {} is a folder, not a file: give the .pth inside it (a run's best.pth, "
                                "checkpoint.pth or backbone.pth)".format(path))
    if not path.is_file():
        raise FileNotFoundError("checkpoint not found: {}".format(path))
    if path.stat().st_size == 0:
        raise ValueError("checkpoint {} is empty (0 bytes)".format(path))
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(str(path)):
            raise ValueError("cannot load checkpoint {}: corrupt, truncated or not a torch file".format(path)) from None
        raise ValueError(
            "refusing to load {}: it holds objects other than tensors and plain containers "
            "(weights_only=True loading refuses them); details: {}".format(path, str(exc).splitlines()[0])
        ) from None
    except Exception as exc:  # junk makes torch raise RuntimeError, EOFError, BadZipFile, KeyError, ...
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError("cannot load checkpoint {}: corrupt or truncated ({}{})".format(
            path, type(exc).__name__, ": " + detail if detail else "")) from None


def plain(value: Any) -> Any:
    """Convert argparse values (Paths, tuples, Namespaces) into types that weights_only loading accepts."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def make_checkpoint(kind: str, model_config: Dict[str, Any], model_state: Dict[str, torch.Tensor],
                    args: Optional[argparse.Namespace] = None, **extra: Any) -> Dict[str, Any]:
    """A self-describing checkpoint: task kind, format version, model config, weights, arguments."""
    ckpt = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_config": plain(model_config),
        "model": model_state,
        "args": plain(args) if args is not None else {},
    }
    ckpt.update(extra)
    return ckpt


def load_checkpoint(path: PathLike, expected_kind: Optional[str] = None,
                    map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load one of our checkpoints and check its format version, task kind and entries with clear errors."""
    ckpt = load_safe(path, map_location)
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "model" not in ckpt:
        raise ValueError("{} is not a checkpoint written by this project (no format_version/model entries); "
                         "a bare state_dict belongs to the loaders of pretrained weights instead".format(path))
    version = ckpt["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError("{} has an invalid format_version {!r} (a positive integer is expected)".format(path, version))
    if version > FORMAT_VERSION:
        raise ValueError("{} has checkpoint format {}, newer than this code's {}: update the code".format(
            path, version, FORMAT_VERSION))
    if expected_kind is not None and ckpt.get("kind") != expected_kind:
        raise ValueError("{} is a '{}' checkpoint, but a '{}' checkpoint is needed here".format(
            path, ckpt.get("kind"), expected_kind))
    if not isinstance(ckpt.get("model_config"), dict):
        raise ValueError("{} has no model_config (the dict that rebuilds its model): not a complete checkpoint of "
                         "this project".format(path))
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise ValueError("{}: its 'model' entry is not a state_dict (names -> tensors)".format(path))
    return ckpt


def check_finite(weights: Dict[str, torch.Tensor], path: PathLike) -> None:
    """A ValueError naming the file and the first tensors holding NaN or infinite values (a diverged run)."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError("checkpoint {} holds non-finite weights (NaN/inf) in {} tensor(s), e.g. {}: the run that "
                         "wrote it diverged; use an earlier checkpoint".format(path, len(bad), ", ".join(bad[:3])))


def load_model(path: PathLike, kind: str, build: Callable[[Dict[str, Any]], torch.nn.Module],
               device: torch.device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild a model from one of our checkpoints alone (``build(model_config)``, no download) and load its
    weights; returns (model in eval mode on ``device``, checkpoint). The config is first built on the meta device
    (no memory) and its shapes compared with the weights', so a config that does not fit them (or describes a
    huge model) fails at once; weights that do not fit, or hold NaN/inf, are a ValueError naming the file."""
    ckpt = load_checkpoint(path, expected_kind=kind)
    config, weights = ckpt["model_config"], ckpt["model"]
    try:
        with torch.device("meta"):
            skeleton = build(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError("checkpoint {}: its model_config {} does not describe a model: {}".format(
            path, config, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(k for k in set(expected) & set(weights) if tuple(weights[k].shape) != expected[k])
    if missing or unexpected or shapes:
        raise ValueError("checkpoint {} does not fit the model its config describes ({}): missing {}, unexpected {}, "
                         "other shapes {}".format(path, config.get("arch"), missing[:3], unexpected[:3], shapes[:3]))
    check_finite(weights, path)
    model = build(config)
    model.load_state_dict(weights)
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, ckpt
