"""Backbone weights: reading a local checkpoint, finding the state_dict inside it, and loading it with every key
checked; plus the two arguments every model builder checks (the weights spec, the number of classes).

Nothing here touches the network: ``"imagenet"`` and ``"coco"`` are resolved by the builders that accept them;
any other ``backbone_weights`` value than ``"none"`` is a local file path, and a file that cannot be loaded or
does not match the model is an error naming the keys, never a silent fallback.
"""
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

# Keys that wrap a state_dict inside a checkpoint, in order of preference: DINO saves both "teacher"
# and "student", and the teacher (EMA) network is the one its authors evaluate and publish.
_WRAPPER_KEYS = ("teacher", "student", "state_dict", "model", "backbone")
_STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_DROP_PREFIXES = ("fc.", "head.")

PathLike = Union[str, Path]


def load_resnet_state_dict(path: PathLike) -> Dict[str, Tensor]:
    """Load a ResNet state_dict from a local checkpoint, unwrapped, de-prefixed, without fc./head. keys."""
    path = Path(path)
    state = _unwrap_state_dict(_read_weights_file(path, "backbone weights"), path)

    result = OrderedDict()  # type: Dict[str, Tensor]
    origin = {}  # type: Dict[str, str]
    for key, value in state.items():
        if not isinstance(key, str):
            raise ValueError("backbone weights from {} have a non-string key {!r}".format(path, key))
        new_key = _strip_prefixes(key)
        if new_key.startswith(_DROP_PREFIXES):
            continue
        if not isinstance(value, Tensor):
            raise ValueError("backbone weights from {}: entry {!r} is a {}, not a tensor".format(
                path, key, type(value).__name__))
        if new_key in result:
            raise ValueError("backbone weights from {}: keys {!r} and {!r} both map to {!r} after "
                             "stripping prefixes {}".format(path, origin[new_key], key, new_key,
                                                            list(_STRIP_PREFIXES)))
        origin[new_key] = key
        result[new_key] = value.detach().cpu()
    if not result:
        raise ValueError("backbone weights from {} contain no tensors after dropping fc./head. keys".format(path))
    return result


def _read_weights_file(path: Path, what: str) -> Any:
    """torch.load a local weights file (weights only); a missing, non-file or corrupt path is a one-line error."""
    if not path.exists():
        raise FileNotFoundError("{} file not found: {}".format(what, path))
    if not path.is_file():
        raise ValueError("{} path is not a file: {}".format(what, path))
    try:
        return _torch_load_weights_only(path)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError("cannot load {} from {} (corrupt, truncated or not a torch file: "
                         "{}: {})".format(what, path, type(exc).__name__, exc)) from exc


def _torch_load_weights_only(path: Path) -> Any:
    """torch.load with weights_only=True, also admitting argparse.Namespace (DINO saves its args)."""
    import argparse

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is not None:  # torch >= 2.5: scoped allow-list
        with safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch 2.4: only a process-wide allow-list exists
        add_safe_globals([argparse.Namespace])
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _is_tensor_dict(obj: Any) -> bool:
    """True for a non-empty mapping whose values are all tensors (a plain state_dict)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping:
    """Descend through wrapper keys ("teacher", "state_dict", ...) until a plain state_dict is found."""
    for _ in range(4):  # a few levels covers e.g. {"state_dict": {"model": {...}}}
        if _is_tensor_dict(obj):
            return obj
        if not isinstance(obj, Mapping):
            break
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    if isinstance(obj, Mapping) and any(isinstance(v, Tensor) for v in obj.values()):
        return obj  # mixed entries; load_resnet_state_dict names the non-tensor ones
    top = sorted(str(k) for k in obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError("backbone weights from {} hold no state_dict: expected a dict of tensors or one "
                     "wrapped under {}; found {}".format(path, list(_WRAPPER_KEYS), top))


def _strip_prefixes(key: str) -> str:
    """Remove any chain of wrapper prefixes, e.g. "module.backbone.conv1.weight" -> "conv1.weight"."""
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def _preview(keys: Sequence[str], limit: int = 10) -> str:
    """Format up to ``limit`` keys plus a count, for error messages."""
    shown = ", ".join(keys[:limit])
    more = " ... (+{} more)".format(len(keys) - limit) if len(keys) > limit else ""
    return "{} [{}{}]".format(len(keys), shown, more)


def load_backbone_weights(backbone: nn.Module, state_dict: Mapping[str, Tensor], source: str, arch: str) -> None:
    """Load ``state_dict`` into ``backbone`` after checking key names and shapes match exactly; an error names
    ``source`` (where the weights came from) and ``arch``."""
    _check_state_dict(backbone.state_dict(), state_dict, "backbone weights from {}".format(source), arch)
    # a fresh dict carries no _metadata, so BatchNorm fills in any missing num_batches_tracked
    backbone.load_state_dict(OrderedDict(state_dict), strict=True)


def _check_state_dict(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor], what: str,
                      target: str) -> None:
    """Raise ValueError naming every missing, unexpected and mis-shaped key of ``state_dict`` vs ``expected``."""
    # BatchNorm's counter is not a weight and older checkpoints lack it; torch itself refills it when a
    # state_dict carries no version metadata, so only those keys may be missing.
    missing = sorted(k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state_dict if k not in expected)
    if missing or unexpected:
        raise ValueError("{} do not match {}: missing {} unexpected {}".format(
            what, target, _preview(missing), _preview(unexpected)))
    bad_shapes = ["{} {} vs expected {}".format(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad_shapes:
        raise ValueError("{} do not match {}: shape mismatch in {}".format(what, target, _preview(bad_shapes)))


def _check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless num_classes is a positive integer."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError("num_classes must be a positive integer, got {!r}".format(num_classes))


def _normalise_weights_spec(backbone_weights: Union[str, Path, None]) -> str:
    """Map None to "none" and reject non-string specs; "none", "imagenet" and "coco" are reserved words."""
    if backbone_weights is None:
        return "none"
    if isinstance(backbone_weights, Path):
        return str(backbone_weights)
    if not isinstance(backbone_weights, str) or not backbone_weights:
        raise ValueError("backbone_weights must be 'none', 'imagenet', 'coco' or a file path, got {!r}".format(
            backbone_weights))
    return backbone_weights
