"""One flag name, one meaning: every flag that two scripts share comes from utils.cli.FLAGS, with its type and the
sentence that opens its help text; a flag in one script only may say what it likes."""
import argparse
import collections
import importlib
import re
from pathlib import Path

import pytest

from utils.cli import FLAGS, add_flag, plain

SCRIPTS = ["p1_ssl_pretrain", "p1_finetune", "p1_tsne", "p1_inference", "p2_unet", "p2_deeplab", "p2_inference",
           "p2_sam", "tools.benchmark"]


def _options():
    """{flag: [(script, action)]} over every script's parser."""
    found = collections.defaultdict(list)
    for name in SCRIPTS:
        parser = importlib.import_module(name).get_args_parser()
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    found[option].append((name, action))
    return found


def test_shared_flags_are_registered_or_defined_once():
    """A flag in several scripts is in the registry, or all its uses come from one definition (the segmentation
    recipe flags of utils.segmentation: same type, same help)."""
    loose = {}
    for flag, uses in _options().items():
        if len(uses) < 2 or flag in FLAGS or flag.replace("--no-", "--") in FLAGS:
            continue
        if len({(a.type, a.help, a.nargs, str(a.choices)) for _, a in uses}) > 1:
            loose[flag] = [s for s, _ in uses]
    assert not loose, "flags that mean different things in different scripts: {}".format(loose)


def test_every_use_of_a_registered_flag_has_its_type_and_meaning():
    checked = 0
    for flag, uses in _options().items():
        if flag not in FLAGS:
            continue
        spec, meaning = FLAGS[flag]
        for script, action in uses:
            assert action.type is spec.get("type"), (flag, script, action.type)
            if flag == "--amp":
                continue
            assert action.help.startswith(meaning), "{} in {}: help does not open with the meaning {!r}: {!r}" \
                .format(flag, script, meaning, action.help)
            if "action" in spec:
                assert action.nargs == 0, (flag, script)
            checked += 1
    assert checked > 60


def test_amp_is_the_same_switch_everywhere():
    for flag in ("--amp", "--no-amp"):
        uses = _options()[flag]
        assert len(uses) >= 8
        assert all(a.dest == "amp" and a.nargs == 0 for _, a in uses)


def test_validating_types_refuse_nonsense_naming_the_flag_and_the_value(capsys):
    parser = argparse.ArgumentParser()
    for flag, default in (("--epochs", 1), ("--crop-size", 8), ("--device", "auto"), ("--workers", 0),
                          ("--lr", 0.1)):
        add_flag(parser, flag, default)
    for argv in (["--epochs", "0"], ["--epochs", "-3"], ["--crop-size", "0"], ["--device", "tpu"],
                 ["--workers", "-1"], ["--lr", "0"], ["--lr", "nan"], ["--lr", "inf"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert "argument {}: ".format(argv[0]) in err and argv[1] in err, (argv, err)
    args = parser.parse_args(["--epochs", "2", "--device", "cuda:1", "--lr", "1e-3"])
    assert (args.epochs, args.device, args.lr) == (2, "cuda:1", 1e-3)


@pytest.mark.parametrize("script, argv", [
    ("p1_finetune", ["--label-smoothing", "5"]),  # before: a RuntimeError traceback after the data were loaded
    ("p1_finetune", ["--label-smoothing", "-1"]),  # before: trained on, silently
    ("p1_finetune", ["--mixup", "-1"]),
    ("p1_finetune", ["--randaugment", "-1"]),
    ("p1_finetune", ["--backbone-lr-mult", "-1"]),  # before: gradient ascent on the backbone, silently
    ("p2_unet", ["--val-batch-size", "0"]),  # before: 'error: batch_size should be a positive integer value'
    ("p2_deeplab", ["--aux-weight", "-1"]),
    ("p1_ssl_pretrain", ["--knn-every", "0"]),  # before: ZeroDivisionError traceback at the first k-NN epoch
    ("p1_ssl_pretrain", ["--momentum-teacher", "2"]),  # before: a diverging teacher, silently
    ("p1_ssl_pretrain", ["--teacher-temp", "0"]),  # before: 'the DINO loss became nan ... Lower --lr'
    ("p1_ssl_pretrain", ["--warmup-teacher-temp", "0"]),
    ("p1_ssl_pretrain", ["--student-temp", "0"]),
    ("p1_ssl_pretrain", ["--center-momentum", "2"]),
    ("p1_ssl_pretrain", ["--min-lr", "-1"]),  # before: a negative learning rate at the end, silently
    ("p1_ssl_pretrain", ["--clip-grad", "-1"]),
    ("p1_ssl_pretrain", ["--freeze-last-layer", "-1"]),
    ("p1_ssl_pretrain", ["--warmup-teacher-temp-epochs", "-1"]),
    ("p1_ssl_pretrain", ["--knn-size", "0"]),
    ("p1_tsne", ["--pca-dim", "-1"]),
    ("p1_tsne", ["--perplexity", "0"]),  # before: scikit-learn's message after the features were computed
    ("p2_unet", ["--snapshot-epochs", "0"]),  # before: accepted; epochs are 1-based, so no snapshot, silently
    ("p2_deeplab", ["--snapshot-epochs", "-5"]),
    ("p1_finetune", ["--save-epochs", "0"]),  # before: accepted; 0 is no epoch (1 is the first, -1 the last)
    ("p1_inference", ["--output", "out/newdir/"]),  # before: a file named 'newdir' written, exit 0
])
def test_script_specific_nonsense_flags_are_usage_errors_naming_the_flag(script, argv, capsys):
    parser = importlib.import_module(script).get_args_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    assert "argument {}".format(argv[0]) in capsys.readouterr().err


@pytest.mark.parametrize("script, given, missing", [
    ("p1_tsne", [], ["--checkpoints"]),
    ("p1_inference", ["--image-dir", "x"], ["--csv", "--output"]),
    ("p1_inference", ["--csv", "x.csv", "--output", "o.csv"], ["--image-dir"]),
    ("p2_inference", [], ["--input-dir", "--output-dir"]),
])
def test_a_missing_required_flag_is_a_usage_error_naming_it(script, given, missing, capsys):
    """What a run cannot guess (which checkpoints to embed, which csv to answer, where the masks go) is asked for
    by name before anything is loaded."""
    parser = importlib.import_module(script).get_args_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(given)
    assert info.value.code == 2
    assert "the following arguments are required: {}".format(", ".join(missing)) in capsys.readouterr().err


def test_a_default_in_plain_words_is_what_a_person_types():
    """The words the help check below compares with, pinned here by example."""
    cases = [(None, "none"), ("", "none"), ([], "none"), (True, "on"), (False, "off"), ([1, 50, 100], "1 50 100"),
             ((0.14, 1.0), "0.14 1.0"), ([Path("checkpoints/p2_best.pth")], "checkpoints/p2_best.pth"), (8, "8")]
    assert [(value, plain(value)) for value, _ in cases] == cases


def _real_default(parser, dest):
    """What parse_args leaves in ``dest`` when no flag of it is given: the first action of that dest decides."""
    return next(a.default for a in parser._actions if a.dest == dest)


REPR = re.compile(r"PosixPath|WindowsPath|\[|\]|\bNone\b|\bTrue\b|\bFalse\b|^$|^\(\)$")


def _help_defects(script):
    """[(flag, defect, help as shown)] of one script's --help: each optional flag shows its real default once, at
    the end, in plain words; a required flag shows none; a --no-x flag says what it turns off and the true state."""
    parser = importlib.import_module(script).get_args_parser()
    formatter = parser._get_formatter()
    printed = "".join(parser.format_help().split())  # textwrap also breaks after hyphens
    options = {o: a for a in parser._actions for o in a.option_strings}
    defects = []
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS:
            continue  # -h/--help
        flag = action.option_strings[0]
        text = " ".join(formatter._expand_help(action).split())
        assert "".join(text.split()) in printed, (script, flag)
        count = text.lower().count("default:") + len(re.findall(r"\bdefault \d", text))
        if action.required:
            if "default" in text.lower():
                defects.append((flag, "required, yet shows a default", text))
            continue
        if count != 1 or not text.endswith(")") or "(default: " not in text:
            defects.append((flag, "{} default statements, not one closing '(default: ...)'".format(count), text))
            continue
        shown = text[text.rindex("(default: ") + len("(default: "):-1]
        real = _real_default(parser, action.dest)
        partner = options.get("--" + flag[len("--no-"):]) if flag.startswith("--no-") else None
        if REPR.search(shown) and not (action.nargs == 0 and shown.startswith(("on", "off"))):
            defects.append((flag, "a Python repr or nothing: {!r}".format(shown), text))
        elif partner is not None and partner.dest == action.dest:  # --no-x beside --x
            if isinstance(real, bool) and shown != "{} is {}".format(partner.option_strings[0], plain(real)):
                defects.append((flag, "not '{} is {}' (the true state)".format(partner.option_strings[0],
                                                                               plain(real)), text))
            elif real is None and shown.startswith(("on", "off", "none", partner.option_strings[0] + " is o")):
                defects.append((flag, "its default is decided elsewhere, yet it reads {!r}".format(shown), text))
        elif action.nargs == 0:  # a switch: 'on' when in effect by default
            want = "on" if real == action.const else "off"
            if real is None:
                if shown.startswith(("on", "off", "none")):
                    defects.append((flag, "decided elsewhere, yet reads {!r}".format(shown), text))
            elif shown.split(":")[0].split(",")[0] != want:
                defects.append((flag, "reads {!r}, but the switch is {} by default".format(shown, want), text))
            elif flag.startswith("--no-") and len(shown) <= len(want):
                defects.append((flag, "does not say the true state of what it turns off", text))
        elif real is not None and shown != plain(real) and not shown.startswith(plain(real) + ":"):
            defects.append((flag, "shows {!r}, the parser's default is {!r}".format(shown, plain(real)), text))
    return defects


def test_every_help_shows_each_real_default_once_in_plainplain():
    """--help is where a newcomer reads the defaults: each optional flag ends with one '(default: X)', X the value
    parse_args gives it in words (a list as its items, a switch as on/off, a None explained or 'none'); a required
    flag shows none; '--no-x' says what it turns off and the state of x."""
    found = {script: _help_defects(script) for script in SCRIPTS}
    found = {script: defects for script, defects in found.items() if defects}
    assert not found, "\n".join("{}: {} -- {}\n    {}".format(s, f, d, t) for s, ds in found.items() for f, d, t in ds)
