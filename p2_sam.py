"""Report part V: Segment Anything (SAM) automatic masks beside our segmentation model.

For every input image, SAM's automatic mask generator prompts a grid of points and keeps the confident,
stable, non-duplicate masks. We save a figure per image (input | SAM masks | our prediction | ground truth),
the raw masks as a compact label image, and a JSON summary.

SAM is optional (``pip install -r requirements-sam.txt``) and its weights are never downloaded here: pass
the official checkpoint you fetched beforehand (links in the segment-anything README)::

    vit_h  https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth  (2.4 GB)
    vit_l  https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth  (1.2 GB)
    vit_b  https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth  (375 MB)

Commands (one GPU is picked automatically when available; CPU works too, ~1 min per image for vit_h)::

    # the report figure: three validation images, SAM vit_h, our model and the ground truth
    python p2_sam.py --images data_2025/p2_data/validation/{0018,0065,0109}_sat.jpg \\
        --sam-weights checkpoints/sam_vit_h_4b8939.pth --model-type vit_h \\
        --checkpoint runs/p2_deeplab/best.pth --masks-dir data_2025/p2_data/validation \\
        --output-dir runs/p2_sam

    # plumbing only (random SAM weights, meaningless masks, no checkpoint needed)
    python p2_sam.py --images demo/0000_sat.jpg --random-init --model-type vit_b --device cpu \\
        --points-per-side 4 --pred-iou-thresh 0 --stability-score-thresh 0 --output-dir runs/p2_sam_smoke

Outputs in ``--output-dir``: ``<stem>_sam.png`` (figure), ``<stem>_sam_masks.npz`` (``labels``: uint16
(H, W), each pixel holds index+1 of the smallest mask covering it, 0 = no mask; ``areas``,
``predicted_iou``, ``stability_score``, ``bboxes`` (x, y, w, h) per mask, largest mask first) and
``sam_summary.json``. An unreadable image is reported and skipped; the exit status is then 1.
"""
import argparse
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from utils.checkpoint import load_safe
from utils.datasets import mask_name_for, read_rgb, to_chw_uint8
from utils.distributed import resolve_device
from utils.fileio import make_folder, save_figure as write_figure, write_atomic, write_text
from utils.masks import IGNORE_INDEX, class_to_rgb, read_mask
from utils.cli import HelpFormatter, add_flag, run_cli
from utils.precision import amp_dtype, autocast
from utils.segmentation import add_class_key, class_key_height

INSTALL_HINT = "pip install -r requirements-sam.txt"
SAM_WEIGHTS = {  # model type -> (official file name, image-encoder width, depth)
    "vit_h": ("sam_vit_h_4b8939.pth", 1280, 32),
    "vit_l": ("sam_vit_l_0b3195.pth", 1024, 24),
    "vit_b": ("sam_vit_b_01ec64.pth", 768, 12),
}
SAM_SIZES = {"vit_h": "2.4 GB", "vit_l": "1.2 GB", "vit_b": "375 MB"}
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OVERLAY_ALPHA = 0.5


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="SAM automatic masks beside our segmentation model (report part V).",
        formatter_class=HelpFormatter)
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="images to segment, e.g. validation 0018_sat.jpg 0065_sat.jpg 0109_sat.jpg")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--sam-weights", type=Path, default=None,
                         help="local official SAM checkpoint, e.g. sam_vit_h_4b8939.pth (never downloaded; see "
                              "the module docstring for the links). Loaded with weights_only=True (default: none: then "
                              "--random-init is required)")
    weights.add_argument("--random-init", action="store_true",
                         help="random SAM weights instead of --sam-weights: only to test the plumbing, the masks "
                              "are meaningless (use with relaxed thresholds, e.g. 0 and 0)")
    parser.add_argument("--model-type", choices=sorted(SAM_WEIGHTS), default="vit_h",
                        help="SAM image encoder; must match --sam-weights. vit_h is the published default and the "
                             "best; vit_b is several times cheaper")
    add_flag(parser, "--output-dir", more="figures, npz files and the summary", required=True)
    add_flag(parser, "--checkpoint", None, "one of our p2 segmentation checkpoints: adds a panel with its "
                                          "prediction", default_text="none: no such panel")
    parser.add_argument("--masks-dir", type=Path, default=None,
                        help="folder with ground-truth <id>_mask.png (id = image stem without _sat): adds a panel "
                             "(default: none: no such panel)")
    add_flag(parser, "--device", "auto")
    add_flag(parser, "--amp", False, " for SAM's image encoder and our model; faster, but SAM's published results "
                                     "are fp32 so it stays off by default. Ignored on CPU")
    g = parser.add_argument_group("SAM automatic mask generator (defaults = SAM's own)")
    g.add_argument("--points-per-side", type=int, default=32,
                   help="the point grid is N x N prompts; more finds smaller objects, cost grows with N^2 "
                        "(decoder only; the encoder runs once per image)")
    g.add_argument("--points-per-batch", type=int, default=64,
                   help="prompts decoded at once; lower it if the GPU runs out of memory")
    g.add_argument("--pred-iou-thresh", type=float, default=0.88,
                   help="keep masks whose predicted IoU exceeds this (0..1); lower gives more, worse masks")
    g.add_argument("--stability-score-thresh", type=float, default=0.95,
                   help="keep masks whose IoU between logit cut-offs +-1 is at least this (0..1); lower gives more "
                        "masks")
    g.add_argument("--min-mask-region-area", type=int, default=0,
                   help="if > 0, remove islands and fill holes smaller than this many pixels in every mask; needs "
                        "OpenCV (pip install opencv-python-headless), which is not needed otherwise")
    add_flag(parser, "--seed", 0, "for --random-init weights and the mask colours")
    return parser


def import_sam() -> Tuple[Any, Any]:
    """(sam_model_registry, SamAutomaticMaskGenerator), or exit with the install hint."""
    try:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError:
        raise SystemExit("error: p2_sam.py needs the optional segment-anything package: {}".format(
            INSTALL_HINT)) from None
    return sam_model_registry, SamAutomaticMaskGenerator


def sam_type_of(state_dict: Dict[str, Any]) -> Optional[str]:
    """Guess vit_h / vit_l / vit_b from the image encoder's width and depth (None if not a SAM state dict)."""
    proj = state_dict.get("image_encoder.patch_embed.proj.weight")
    if not isinstance(proj, torch.Tensor):
        return None
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    for name, (_, width, blocks) in SAM_WEIGHTS.items():
        if proj.shape[0] == width and depth == blocks:
            return name
    return "an unknown variant (encoder width {}, {} blocks)".format(proj.shape[0], depth)


def load_sam_weights(checkpoint: Path, model_type: str) -> Dict[str, torch.Tensor]:
    """Load an official SAM state dict with weights_only=True and check it is the ``model_type`` variant."""
    try:
        state_dict = load_safe(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        if checkpoint.is_file() and not zipfile.is_zipfile(str(checkpoint)):
            # the official files are torch zip archives; random or HTML bytes otherwise read as a bad pickle
            raise SystemExit("error: cannot load SAM checkpoint {}: not a PyTorch zip archive (corrupt, truncated "
                             "or not a checkpoint; the official {} is {})".format(
                                 checkpoint, SAM_WEIGHTS[model_type][0], SAM_SIZES[model_type])) from None
        raise SystemExit("error: {}".format(exc)) from None
    if isinstance(state_dict, dict) and "image_encoder.patch_embed.proj.weight" not in state_dict:
        for key in ("model", "state_dict"):  # tolerate a wrapped state dict
            if isinstance(state_dict.get(key), dict):
                state_dict = state_dict[key]
                break
    found = sam_type_of(state_dict) if isinstance(state_dict, dict) else None
    if found is None:
        raise SystemExit("error: {} is not a SAM checkpoint (no image_encoder.patch_embed.proj.weight); expected "
                         "an official file such as {}".format(checkpoint, SAM_WEIGHTS[model_type][0]))
    if found != model_type:
        raise SystemExit("error: {} holds SAM {} but --model-type is {}; pass the matching --model-type".format(
            checkpoint, found, model_type))
    return state_dict


def build_sam(sam_model_registry: Any, model_type: str, checkpoint: Optional[Path]) -> torch.nn.Module:
    """Build SAM and load ``checkpoint`` ourselves: the registry's own loader uses an unsafe torch.load."""
    state_dict = None if checkpoint is None else load_sam_weights(checkpoint, model_type)  # fail before building
    sam = sam_model_registry[model_type](checkpoint=None)
    if state_dict is not None:
        try:
            sam.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise SystemExit("error: {} does not fit SAM {}: {}".format(
                checkpoint, model_type, str(exc).splitlines()[0])) from None
    return sam


class AutocastEncoder(torch.nn.Module):
    """Runs SAM's image encoder (nearly all of its compute) under autocast and returns fp32 embeddings."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.encoder = encoder
        self.img_size = encoder.img_size  # SamPredictor reads it
        self.device, self.dtype = device, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.encoder(x).float()


def label_image(masks: List[Dict[str, Any]], height: int, width: int) -> np.ndarray:
    """uint16 (H, W): index+1 of the smallest mask covering each pixel (masks sorted largest first), 0 = none."""
    if len(masks) >= np.iinfo(np.uint16).max:
        raise ValueError("{} masks do not fit a uint16 label image".format(len(masks)))
    labels = np.zeros((height, width), dtype=np.uint16)
    for index, m in enumerate(masks):  # later = smaller masks overwrite larger ones
        labels[m["segmentation"]] = index + 1
    return labels


def overlay_masks(image: np.ndarray, masks: List[Dict[str, Any]], seed: int) -> np.ndarray:
    """Blend each mask (largest first) in its own colour over the image; (H, W, 3) uint8."""
    import matplotlib.colors

    rng = np.random.default_rng(seed)
    out = image.astype(np.float32)
    offset = rng.random()
    for index, m in enumerate(masks):
        hue = (offset + index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours' hues apart
        colour = matplotlib.colors.hsv_to_rgb([hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)]) * 255.0
        seg = m["segmentation"]
        out[seg] = (1.0 - OVERLAY_ALPHA) * out[seg] + OVERLAY_ALPHA * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def classes_rgb(classes: np.ndarray) -> np.ndarray:
    """Class map -> official colours; ground-truth pixels the grader leaves undefined (red) stay red."""
    ignore = classes == IGNORE_INDEX
    rgb = class_to_rgb(np.where(ignore, 0, classes))
    rgb[ignore] = (255, 0, 0)
    return rgb


def save_figure(path: Path, panels: List[Tuple[str, np.ndarray]], with_legend: bool) -> None:
    """One row of image panels (title, (H, W, 3) uint8), plus the class colour key when a class map is shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key_height = class_key_height(4.0 * len(panels)) if with_legend else 0.0
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.3 + key_height), squeeze=False)
    for ax, (title, rgb) in zip(axes[0], panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    if with_legend:
        add_class_key(fig, key_height)
    else:
        fig.tight_layout()
    try:
        write_figure(fig, path, "SAM figure")
    finally:
        plt.close(fig)


def check_inputs(args: argparse.Namespace) -> None:
    """Cheap checks before any model is built, each a one-line error."""
    if args.sam_weights is None and not args.random_init:
        raise SystemExit("error: pass --sam-weights (an official SAM file, e.g. {}) or --random-init".format(
            SAM_WEIGHTS[args.model_type][0]))
    if args.sam_weights is not None and args.random_init:
        raise SystemExit("error: --sam-weights and --random-init exclude each other")
    if args.sam_weights is not None and not args.sam_weights.is_file():
        name = SAM_WEIGHTS[args.model_type][0]
        raise SystemExit("error: SAM checkpoint not found: {}. Fetch the official {} weights on a machine with "
                         "internet ({}{}; links in the segment-anything README) and pass the local file".format(
                             args.sam_weights, args.model_type, WEIGHTS_URL, name))
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise SystemExit("error: --checkpoint not found: {}".format(args.checkpoint))
    if args.masks_dir is not None and not args.masks_dir.is_dir():
        raise SystemExit("error: --masks-dir is not a folder: {}".format(args.masks_dir))
    if args.points_per_side < 1 or args.points_per_batch < 1:
        raise SystemExit("error: --points-per-side and --points-per-batch must be >= 1")
    for flag in ("pred_iou_thresh", "stability_score_thresh"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise SystemExit("error: --{} must lie in [0, 1]".format(flag.replace("_", "-")))
    stems = [p.stem for p in args.images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise SystemExit("error: several --images share the stem {}; their outputs would overwrite each "
                         "other".format(", ".join(clashes)))
    if args.min_mask_region_area > 0:
        try:
            import cv2  # noqa: F401  (SAM's remove_small_regions needs it)
        except ImportError:
            raise SystemExit("error: --min-mask-region-area > 0 needs OpenCV: pip install "
                             "opencv-python-headless (or use --min-mask-region-area 0)") from None


def load_our_model(args: argparse.Namespace, device: torch.device):
    """(model, config) of --checkpoint, or (None, None); loaded before SAM: its errors are cheaper to hit."""
    if args.checkpoint is None:
        return None, None
    from utils.predict import load_segmenter  # our model zoo, only when needed

    try:
        model, ckpt = load_segmenter(args.checkpoint, device)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit("error: {}".format(exc)) from None
    return model, ckpt["model_config"]


def make_generator(args: argparse.Namespace, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """SAM (our safe weight loading) wrapped in its automatic mask generator with the command's settings."""
    sam_model_registry, SamAutomaticMaskGenerator = import_sam()
    torch.manual_seed(args.seed)
    sam = build_sam(sam_model_registry, args.model_type, args.sam_weights)
    if args.random_init:
        print("warning: --random-init: SAM has random weights, its masks are meaningless (plumbing test only)",
              file=sys.stderr)
    if dtype is not None:
        sam.image_encoder = AutocastEncoder(sam.image_encoder, device, dtype)
    sam.to(device).eval()
    return SamAutomaticMaskGenerator(
        sam, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
        min_mask_region_area=args.min_mask_region_area)


def timed_masks(generator: Any, image: np.ndarray, device: torch.device) -> Tuple[List[Dict[str, Any]], float]:
    """SAM's masks of one image, largest first, and the seconds the generator took (encoder + decoder + filter)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    masks = generator.generate(image)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sorted(masks, key=lambda m: m["area"], reverse=True), time.perf_counter() - start


def ground_truth_panel(args: argparse.Namespace, path: Path, shape: Tuple[int, int]) -> Optional[np.ndarray]:
    """The ground-truth colours of ``path`` from --masks-dir, or None (with a note) when there is none."""
    if args.masks_dir is None:
        return None
    gt_path = args.masks_dir / mask_name_for(path)
    try:
        gt = read_mask(gt_path)
        if gt.shape != shape:
            raise ValueError("mask {} is {}x{} but the image is {}x{}".format(
                gt_path, gt.shape[1], gt.shape[0], shape[1], shape[0]))
        return classes_rgb(gt)
    except (OSError, ValueError) as exc:
        tqdm.write("note: no ground-truth panel for {}: {}".format(path.name, exc), file=sys.stderr)
        return None


def process_image(args: argparse.Namespace, path: Path, generator: Any, ours: Tuple[Any, Any],
                  device: torch.device, dtype: Optional[torch.dtype]) -> Dict[str, Any]:
    """SAM masks of one image saved as .npz, the figure beside our prediction and the ground truth; its summary."""
    image = read_rgb(path)
    height, width = image.shape[:2]
    masks, seconds = timed_masks(generator, image, device)
    labels = label_image(masks, height, width)
    write_atomic(args.output_dir / "{}_sam_masks.npz".format(path.stem), lambda f: np.savez_compressed(
        f, labels=labels, areas=np.array([m["area"] for m in masks], dtype=np.int64),
        predicted_iou=np.array([m["predicted_iou"] for m in masks], dtype=np.float32),
        stability_score=np.array([m["stability_score"] for m in masks], dtype=np.float32),
        bboxes=np.array([m["bbox"] for m in masks], dtype=np.int64).reshape(-1, 4)), "SAM masks")
    sam_title = "SAM {}: {} mask{}".format(args.model_type, len(masks), "" if len(masks) == 1 else "s")
    panels = [("input {}".format(path.name), image), (sam_title, overlay_masks(image, masks, args.seed))]
    model, config = ours
    if model is not None:
        from utils.predict import predict_classes

        pred = predict_classes(model, to_chw_uint8(image)[None].to(device), config, amp_dtype=dtype)[0]
        panels.append(("ours ({})".format(config.get("arch", "?")), classes_rgb(pred.cpu().numpy())))
    gt = ground_truth_panel(args, path, (height, width))
    if gt is not None:
        panels.append(("ground truth", gt))
    figure = args.output_dir / "{}_sam.png".format(path.stem)
    save_figure(figure, panels, with_legend=model is not None or gt is not None)
    return {"image": str(path), "num_masks": len(masks),
            "mean_predicted_iou": float(np.mean([m["predicted_iou"] for m in masks])) if masks else None,
            "coverage": float((labels > 0).mean()),  # fraction of pixels inside at least one mask
            "seconds": round(seconds, 3), "with_ground_truth": gt is not None, "figure": str(figure)}


def main(args: argparse.Namespace) -> Dict[str, Any]:
    import_sam()  # the install hint first
    check_inputs(args)
    device = resolve_device(args.device)
    dtype = amp_dtype(device, args.amp)  # None (fp32) on CPU
    make_folder(args.output_dir)
    ours = load_our_model(args, device)
    generator = make_generator(args, device, dtype)
    summary = {
        "model_type": args.model_type, "sam_weights": None if args.sam_weights is None else str(args.sam_weights),
        "random_init": bool(args.random_init),
        "settings": {k: getattr(args, k) for k in ("points_per_side", "pred_iou_thresh",
                                                    "stability_score_thresh", "min_mask_region_area")},
        "device": str(device), "amp": None if dtype is None else str(dtype).replace("torch.", ""),
        "with_prediction": ours[0] is not None, "images": [], "failed": [],
    }  # type: Dict[str, Any]
    for path in tqdm(args.images, desc="SAM", unit="img", file=sys.stderr):
        try:
            summary["images"].append(process_image(args, path, generator, ours, device, dtype))
        except (OSError, ValueError) as exc:  # an unreadable image: named, and the others still run
            tqdm.write("error: {} (skipped)".format(exc), file=sys.stderr)
            summary["failed"].append({"image": str(path), "error": str(exc)})
    write_text(args.output_dir / "sam_summary.json", json.dumps(summary, indent=2), "SAM summary")
    print("SAM masks: {} image(s) done, {} failed -> {}".format(
        len(summary["images"]), len(summary["failed"]), args.output_dir))
    return summary


if __name__ == "__main__":
    result = run_cli(main, get_args_parser())
    sys.exit(1 if result["failed"] else 0)
