"""Publish a trained model for grading: the file to upload, its sha256, and the manifest row that fetches it.

    python -m tools.publish runs/p1_C/best.pth --problem 1                  # writes checkpoints/p1_best.pth
    python -m tools.publish runs/p2_deeplab/best.pth --problem 2 --link URL  # ... and fills the manifest row

It reads a run's ``best.pth`` (kind ``p1_classifier`` from p1_finetune.py, or ``p2_segmentation`` from
p2_unet.py / p2_deeplab.py) and writes only what inference needs -- format_version, kind, model_config, the
model weights and, for problem 1, the evaluation settings p1_inference.py reads (image_size, mean, std,
num_classes) -- no optimizer, no arguments, no history. The written file is loaded back through the loaders
the grading scripts use (utils.classify.load_classifier / utils.predict.load_segmenter) and must predict exactly
what the run's file predicts. It prints the size and sha256 (and a warning above 50 MB: such a file must not be
committed to git). With ``--link`` (the share link of the uploaded file: Google Drive, Dropbox or plain https)
it fills that checkpoint's row of checkpoints/manifest.csv with the link and the sha256, which is what
``bash hw1_download_ckpt.sh`` reads on the TAs' machine. Then: commit the manifest, push, and run
``bash scripts/presubmit.sh`` (docs/submitting.md).

Refused, naming why: a run's checkpoint.pth, snapshot or epoch file instead of its best.pth (unless --any-epoch); a
problem-1 model of another setting than C, or a setting C trained from a random backbone (``--backbone none``;
unless --any-setting); a manifest with two grading rows for the file. A link no TA can reach (localhost, a private
address, a local host name) is a warning.
"""
import argparse
import csv
import io
import ipaddress
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from tools.download import (DEFAULT_MANIFEST, GRADING_GROUP, REPO_ROOT, DownloadError, ManifestEntry, ManifestError,
                            read_manifest, resolve_link, sha256_of)
from tools.presubmit import SIZE_LIMIT
from utils.checkpoint import load_checkpoint, save_atomic
from utils.fileio import write_atomic
from utils.classify import CLASSIFIER_KIND, classify, load_classifier
from utils.predict import SEG_KIND, load_segmenter, predict_probs

KIND_OF_PROBLEM = {"1": CLASSIFIER_KIND, "2": SEG_KIND}
# what each grading path reads from a checkpoint (utils/classify.py, utils/predict.py): nothing else ships
KEPT_KEYS = {
    CLASSIFIER_KIND: ("format_version", "kind", "model_config", "model", "image_size", "mean", "std", "num_classes"),
    SEG_KIND: ("format_version", "kind", "model_config", "model"),
}
GRADED_SETTING = "C"  # problem 1's graded model
# a run's other files (utils/lifecycle.py): the last epoch's resumable state, and chosen epochs' copies
RUN_STATE = re.compile(r"^(checkpoint(_epoch\d+)?|snapshot_epoch\d+|epoch_\d+)\.pth$")
LOCAL_SUFFIXES = (".local", ".localhost", ".lan", ".home", ".internal", ".intranet", ".corp")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.publish",
        description="Write the checkpoint file to upload for grading (only what inference needs), verify it "
                    "loads as the grading scripts load it, print its size and sha256, and with --link fill its "
                    "row of checkpoints/manifest.csv.")
    parser.add_argument("checkpoint", type=Path,
                        help="a run's best.pth: p1_finetune.py's (problem 1, setting C) or p2_unet.py's / "
                             "p2_deeplab.py's (problem 2)")
    parser.add_argument("--problem", required=True, choices=sorted(KIND_OF_PROBLEM),
                        help="1: hw1_1.sh loads checkpoints/p1_best.pth; 2: hw1_2.sh loads checkpoints/p2_best.pth")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the file to upload (default: checkpoints/p1_best.pth or "
                             "p2_best.pth in the repository, the path the grading scripts load; git ignores it)")
    parser.add_argument("--link", default=None,
                        help="the public share link of the uploaded file (Google Drive 'Anyone with the link', "
                             "Dropbox, or a GitHub release asset): fills the manifest row with it and the sha256")
    parser.add_argument("--manifest", type=Path, default=Path(DEFAULT_MANIFEST),
                        help="the manifest to fill (default: this repository's checkpoints/manifest.csv)")
    parser.add_argument("--any-setting", action="store_true",
                        help="publish a problem-1 checkpoint of another setting than C (the graded one), or a "
                             "setting C trained from a random backbone (--backbone none)")
    parser.add_argument("--any-epoch", action="store_true",
                        help="publish a run's checkpoint.pth, snapshot_epochNNN.pth or epoch_NNN.pth (not its "
                             "best.pth: the best validation epoch's model)")
    return parser


def unreachable_link(url: str) -> Optional[str]:
    """Why the TAs' machine cannot reach ``url`` (None: it may): this machine, a private or link-local address, a
    host name only a local network knows."""
    host = (urllib.parse.urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
            return "{} is a name only this machine or its local network knows".format(host)
        return None if "." in host else "{} is a name without a domain: only a local network knows it".format(host)
    if address.is_loopback or address.is_unspecified:
        return "{} is this machine".format(host)
    if address.is_private or address.is_link_local or address.is_reserved or address.is_multicast:
        return "{} is a private address".format(host)
    return None


def set_manifest_link(path: str, destination: str, url: str, sha256: str) -> ManifestEntry:
    """Fill the url and sha256 of the grading row for ``destination`` in place (comments and other rows kept)."""
    entries = [e for e in read_manifest(path) if e.group == GRADING_GROUP and e.destination == destination]
    if not entries:
        raise ManifestError(f"{path}: no {GRADING_GROUP!r} row for {destination} (expected a line "
                            f"'{GRADING_GROUP},,,{destination}')")
    if len(entries) > 1:  # the download would fetch both into one file: which one is graded?
        raise ManifestError(f"{path}: {len(entries)} {GRADING_GROUP!r} rows for {destination} (lines "
                            f"{', '.join(str(e.line) for e in entries)}); delete all but one, then rerun")
    with open(path, newline="", encoding="utf-8") as f:
        lines = io.StringIO(f.read(), newline="").readlines()  # split as read_manifest splits: \n, \r\n, \r
    row = io.StringIO()
    csv.writer(row, lineterminator="").writerow([GRADING_GROUP, url, sha256.lower(), destination])
    ending = "\n" if not lines[entries[0].line - 1].endswith("\r\n") else "\r\n"
    lines[entries[0].line - 1] = row.getvalue() + ending
    text = "".join(lines)
    read_manifest(path, text.encode("utf-8"))  # never install a manifest the downloader would refuse
    write_atomic(path, lambda f: f.write(text), "the manifest", text=True, ours=lambda p: True)  # read as one above
    return entries[0]._replace(url=url, sha256=sha256.lower())


def slim_checkpoint(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """Only the entries the grading path reads (see KEPT_KEYS)."""
    return {key: ckpt[key] for key in KEPT_KEYS[ckpt["kind"]] if key in ckpt}


def same_predictions(original: Path, published: Path, kind: str) -> bool:
    """Load both files through the grading loaders and compare their outputs on one fixed random input."""
    with torch.no_grad():
        device = torch.device("cpu")
        generator = torch.Generator().manual_seed(0)
        outputs = []
        for path in (original, published):
            if kind == CLASSIFIER_KIND:
                model, ckpt = load_classifier(path, device)
                size = int(ckpt.get("image_size", 128))
                images = torch.randint(0, 256, (2, 3, size, size), generator=generator, dtype=torch.uint8)
                outputs.append(classify(model, images, ckpt))
            else:
                model, ckpt = load_segmenter(path, device)
                images = torch.randint(0, 256, (1, 3, 64, 64), generator=generator, dtype=torch.uint8)
                outputs.append(predict_probs(model, images, ckpt["model_config"]))
            generator.manual_seed(0)
        return torch.equal(outputs[0], outputs[1])


def publish(args: argparse.Namespace) -> Dict[str, Any]:
    """Write, verify and describe the file to upload; fill the manifest when a link is given."""
    kind = KIND_OF_PROBLEM[args.problem]
    if args.link is not None:
        resolve_link(args.link)  # a folder link, a Dropbox home page...: refused before anything is written
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("kind") not in KEPT_KEYS:
        raise ValueError("{} is a {!r} checkpoint; publish takes a best.pth of p1_finetune.py (kind {!r}) or of "
                         "p2_unet.py / p2_deeplab.py (kind {!r})".format(args.checkpoint, ckpt.get("kind"),
                                                                        CLASSIFIER_KIND, SEG_KIND))
    if ckpt["kind"] != kind:
        raise ValueError("{} is a {!r} checkpoint, but problem {} is graded with a {!r} one (check --problem)"
                         .format(args.checkpoint, ckpt["kind"], args.problem, kind))
    setting = ckpt.get("setting")
    if kind == CLASSIFIER_KIND and setting not in (None, GRADED_SETTING) and not args.any_setting:
        raise ValueError("{} is setting {}; problem 1 grades setting {} (pass --any-setting to publish it "
                         "anyway)".format(args.checkpoint, setting, GRADED_SETTING))
    trained = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    if kind == CLASSIFIER_KIND and setting == GRADED_SETTING and not args.any_setting and \
            "none" in (ckpt.get("backbone_source"), trained.get("backbone")):
        raise ValueError("{} is setting C trained with --backbone none (a random initialisation), not from your SSL "
                         "pre-trained backbone (p1_ssl_pretrain.py's backbone.pth), which is what problem 1 grades; "
                         "train setting C from it (pass --any-setting to publish this one anyway)"
                         .format(args.checkpoint))
    if not args.any_epoch and (RUN_STATE.match(args.checkpoint.name) or "optimizer" in ckpt):
        what = ("resumable training state (the last epoch's, optimizer included)" if "optimizer" in ckpt else
                "copy of one chosen epoch")
        raise ValueError("{} is a run's {} (epoch {}), not its best.pth, the best validation epoch's model: publish "
                         "{} (pass --any-epoch to publish this one anyway)".format(
                             args.checkpoint, what, ckpt.get("epoch", "?"), args.checkpoint.parent / "best.pth"))
    if args.link is not None and unreachable_link(args.link):
        print("warning: --link {}: {}: the TAs' machine cannot reach it. Upload the file where anyone can fetch it "
              "(Google Drive 'Anyone with the link', Dropbox, a GitHub release asset) and give that link"
              .format(args.link, unreachable_link(args.link)), file=sys.stderr)
    destination = "checkpoints/p{}_best.pth".format(args.problem)
    output = args.output if args.output is not None else Path(REPO_ROOT) / destination
    slim = slim_checkpoint(ckpt)
    if output.resolve() == args.checkpoint.resolve():
        if set(ckpt) != set(slim):
            raise ValueError("{} holds more than inference needs ({}); write the file to upload elsewhere "
                             "(--output)".format(args.checkpoint, ", ".join(sorted(set(ckpt) - set(slim)))))
        print("{}: already the file to upload (only what inference needs); not rewritten".format(output))
    else:
        save_atomic(slim, output)
    if not same_predictions(args.checkpoint, output, kind):
        raise ValueError("{} does not predict what {} predicts; not published".format(output, args.checkpoint))
    size, digest = output.stat().st_size, sha256_of(str(output))
    print("file to upload: {}\n  size   {:.1f} MB ({} bytes)\n  sha256 {}\n  loads through the grading "
          "loader and predicts exactly what {} predicts".format(output, size / 2 ** 20, size, digest,
                                                                args.checkpoint))
    if size > SIZE_LIMIT:
        print("warning: {:.1f} MB is over GitHub's 50 MB limit: do not commit it to git (checkpoints/*.pth is "
              "git-ignored); upload it and give its link with --link".format(size / 2 ** 20))
    result = {"output": str(output), "size": size, "sha256": digest, "kind": kind, "manifest": None}
    if args.link is None:
        print("next: upload {} (Google Drive: Share > General access > 'Anyone with the link'; Dropbox; or a "
              "GitHub release asset), then fill the manifest:\n  python -m tools.publish {} --problem {} --link "
              "URL".format(output, output, args.problem))
        return result
    entry = set_manifest_link(str(args.manifest), destination, args.link, digest)
    print("{} line {}: {} -> {} (sha256 {})".format(args.manifest, entry.line, destination, args.link, digest))
    print("next: commit {}, push, and run `bash scripts/presubmit.sh` (it clones the repository and runs "
          "hw1_download_ckpt.sh, hw1_1.sh and hw1_2.sh as the TAs do)".format(args.manifest))
    result["manifest"] = str(args.manifest)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        publish(args)
    except (OSError, ValueError, DownloadError, ManifestError) as exc:  # ManifestError is a ValueError too
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
