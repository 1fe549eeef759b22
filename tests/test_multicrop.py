"""Tests for utils/multicrop.py: output contract, sampled rates against DINO's published recipe, crop statistics
against torchvision's own RandomResizedCrop sampler, what apply_view does with given parameters, reproducibility.

The recipe's numbers are copied here by hand from facebookresearch/dino ``DataAugmentationDINO`` and reference
results come from torchvision, never from the code under test.
"""
import itertools
import math
import multiprocessing
import pickle
from types import SimpleNamespace
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
import torch.utils.data
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from utils.multicrop import (NUM_UNIFORMS, MultiCropAugmentation, ViewSpec, adjust_hue, apply_view,
                             blur_kernel_size, dino_view_specs, params_from_uniforms, sample_view_params)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
N_DRAWS = 4000

# DINO's recipe (main_dino.py DataAugmentationDINO), per view kind
RECIPE = {
    "global1": dict(p_flip=0.5, p_jitter=0.8, p_gray=0.2, p_blur=1.0, p_solarize=0.0),
    "global2": dict(p_flip=0.5, p_jitter=0.8, p_gray=0.2, p_blur=0.1, p_solarize=0.2),
    "local": dict(p_flip=0.5, p_jitter=0.8, p_gray=0.2, p_blur=0.5, p_solarize=0.0),
}
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as in DataLoader workers: these small ops only lose from threading, and on a busy
    2-core machine OpenMP's spinning threads made a single call 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_image(height: int = 84, width: int = 84, seed: int = 0) -> torch.Tensor:
    """uint8 (3, H, W) noise image."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)


def plain_params(height: int, width: int, **overrides: Any) -> Dict[str, Any]:
    """Parameters that only crop the whole image: no flip, jitter, gray, blur or solarize."""
    params = {"crop": (0, 0, height, width), "flip": False, "jitter": None, "gray": False,
              "blur_sigma": None, "solarize": False}
    params.update(overrides)
    return params


def unnormalise(view: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation -> [0, 1] pixels."""
    return view * STD + MEAN


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (largest gap between the empirical CDFs)."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# ----------------------------------------------------------------------------------------------------------
# Output contract
# ----------------------------------------------------------------------------------------------------------

def check_views(views: List[torch.Tensor], global_size: int, local_size: int, num_local: int) -> None:
    assert len(views) == 2 + num_local
    lo, hi = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD  # normalised range of [0, 1] pixels, per channel
    for i, view in enumerate(views):
        size = global_size if i < 2 else local_size
        assert view.shape == (3, size, size) and view.dtype == torch.float32
        assert type(view) is torch.Tensor
        assert torch.isfinite(view).all()
        assert (view >= lo - 1e-5).all() and (view <= hi + 1e-5).all()


def test_default_views_shapes_dtype_and_range():
    views = MultiCropAugmentation(seed=0)(random_image())
    check_views(views, 128, 64, 6)


@pytest.mark.parametrize("global_size,local_size,num_local", [(32, 16, 2), (40, 24, 0)])
def test_custom_sizes_and_no_local_views(global_size, local_size, num_local):
    aug = MultiCropAugmentation(global_size=global_size, local_size=local_size, num_local=num_local, seed=1)
    for seed in range(3):
        check_views(aug(random_image(seed=seed)), global_size, local_size, num_local)
    # what a log shows of it: the view count, both sizes (no local size without local views) and the seed
    assert repr(aug) == "MultiCropAugmentation(views={}, global_size={}, local_size={}, seed=1)".format(
        2 + num_local, global_size, local_size if num_local else None)


def test_pil_and_tensor_inputs_give_the_same_views():
    img = random_image(60, 90)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    from_pil = MultiCropAugmentation(seed=4)(pil)
    from_tensor = MultiCropAugmentation(seed=4)(img)
    for a, b in zip(from_pil, from_tensor):
        assert torch.equal(a, b)
    # grayscale / palette PIL images are converted to RGB
    check_views(MultiCropAugmentation(seed=4)(pil.convert("L")), 128, 64, 6)


def test_uniform_layout_gives_every_draw_its_own_slot():
    """The U_* offsets (shared with utils/gpu_multicrop.py) tile 0..NUM_UNIFORMS-1: no two draws share a uniform."""
    from utils import multicrop

    sizes = {"U_AREA": multicrop.CROP_ATTEMPTS, "U_LOG_RATIO": multicrop.CROP_ATTEMPTS, "U_TOP": 1, "U_LEFT": 1,
             "U_FLIP": 1, "U_JITTER": 1, "U_ORDER": 4, "U_FACTORS": 4, "U_GRAY": 1, "U_BLUR": 1, "U_SIGMA": 1,
             "U_SOLARIZE": 1}
    starts = {name: getattr(multicrop, name) for name in sizes}
    slots = sorted(i for name, n in sizes.items() for i in range(starts[name], starts[name] + n))
    assert slots == list(range(NUM_UNIFORMS)) and multicrop.CROP_ATTEMPTS == 10


def test_crop_attempt_k_reads_its_own_uniforms():
    """Attempt 0 asks for 4/3 of the area (too wide), attempt 1 for half of it at ratio 1: a 7x7 crop placed by
    the top/left uniforms; every other uniform is 0.999, so reading the wrong slot changes the answer."""
    from utils import multicrop

    u = [0.999] * NUM_UNIFORMS
    u[multicrop.U_AREA], u[multicrop.U_LOG_RATIO] = 0.999, 0.999
    u[multicrop.U_AREA + 1], u[multicrop.U_LOG_RATIO + 1] = 0.0, 0.5
    u[multicrop.U_TOP], u[multicrop.U_LEFT] = 0.5, 0.99
    spec = ViewSpec(8, (0.5, 1.0))
    assert params_from_uniforms(spec, 10, 10, u)["crop"] == (2, 3, 7, 7)
    # a crop rounding to zero rows is refused (as torchvision does): all attempts fail, the centred fallback is
    # the largest crop at the ratio bound, 8 rows x 10 columns
    thin = ViewSpec(8, (0.003, 0.003), ratio=(4.0 / 3.0, 4.0 / 3.0))
    assert params_from_uniforms(thin, 10, 10, [0.5] * NUM_UNIFORMS)["crop"] == (1, 0, 8, 10)
    # one row is a crop: 4 px of area at ratio 4 is 1 x 4, placed at int(0.5 * 10) = 5, int(0.5 * 7) = 3
    strip = ViewSpec(1, (0.04, 0.04), ratio=(4.0, 4.0))
    assert params_from_uniforms(strip, 10, 10, [0.5] * NUM_UNIFORMS)["crop"] == (5, 3, 1, 4)
    with pytest.raises(ValueError, match="need {} uniforms, got 3".format(NUM_UNIFORMS)):
        params_from_uniforms(spec, 10, 10, [0.5] * 3)


@pytest.mark.parametrize("bad, message", [
    (dict(ratio=(0.0, 1.0)), r"ratio must satisfy 0 < min <= max, got \(0.0, 1.0\)"),
    (dict(ratio=(2.0, 1.0)), r"ratio must satisfy 0 < min <= max, got \(2.0, 1.0\)"),
    (dict(brightness=-0.1), r"brightness/contrast/saturation must be in \[0, 1\]"),
    (dict(brightness=1.5), r"brightness/contrast/saturation must be in \[0, 1\]"),
    (dict(contrast=1.5), r"brightness/contrast/saturation must be in \[0, 1\]"),
    (dict(saturation=1.5), r"brightness/contrast/saturation must be in \[0, 1\]"),
    (dict(hue=0.6), r"hue must be in \[0, 0.5\], got 0.6"),
    (dict(blur_sigma=(0.0, 1.0)), r"blur_sigma must satisfy 0 < min <= max"),
    (dict(size=0), r"size must be >= 1, got 0"),
    (dict(p_solarize=-0.1), r"p_solarize must be in \[0, 1\], got -0.1")])
def test_view_spec_refuses_recipes_the_sampler_would_mishandle(bad, message):
    with pytest.raises(ValueError, match="^local: " + message + "$"):  # the view's name, the flaw, the value
        ViewSpec(**dict(dict(size=8, scale=(0.1, 1.0), name="local"), **bad))


def test_bad_inputs_raise():
    aug = MultiCropAugmentation(seed=0)
    with pytest.raises(ValueError, match=r"^expected a \(3, H, W\) image tensor, got shape \(1, 20, 20\)$"):
        aug(torch.zeros(1, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^expected a uint8 image tensor, got torch.float32$"):
        aug(torch.zeros(3, 20, 20))
    with pytest.raises(TypeError):
        aug(np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        apply_view(random_image(), ViewSpec(8, (0.1, 1.0)), plain_params(84, 85))
    with pytest.raises(ValueError):
        ViewSpec(8, (0.1, 1.0), p_blur=1.5)
    with pytest.raises(ValueError):
        ViewSpec(8, (0.5, 0.1))


# ----------------------------------------------------------------------------------------------------------
# Sampled parameters follow the recipe
# ----------------------------------------------------------------------------------------------------------

def test_specs_are_dinos_recipe():
    specs = dino_view_specs()
    assert [s.name for s in specs] == ["global1", "global2"] + ["local"] * 6
    for spec in specs:
        assert spec.size == (128 if spec.name.startswith("global") else 64)
        assert spec.scale == ((0.14, 1.0) if spec.name.startswith("global") else (0.05, 0.14))
        assert spec.ratio == pytest.approx((3 / 4, 4 / 3))
        assert spec.blur_sigma == (0.1, 2.0)
        for field, value in itertools.chain(RECIPE[spec.name].items(), JITTER.items()):
            assert getattr(spec, field) == value, (spec.name, field)
    assert len(dino_view_specs(num_local=0)) == 2


@pytest.fixture(scope="module")
def sampled() -> Dict[str, List[Dict[str, Any]]]:
    """N_DRAWS seeded parameter draws per view kind on an 84x84 image."""
    specs = {s.name: s for s in dino_view_specs()}
    out = {}
    for k, name in enumerate(["global1", "global2", "local"]):
        g = torch.Generator().manual_seed(100 + k)
        out[name] = [sample_view_params(specs[name], 84, 84, g) for _ in range(N_DRAWS)]
    return out


def assert_rate(hits: np.ndarray, p: float, what: str) -> None:
    rate = float(np.mean(hits))
    if p in (0.0, 1.0):
        assert rate == p, what
    else:
        se = math.sqrt(p * (1 - p) / len(hits))
        assert abs(rate - p) < 4 * se, "{}: rate {:.4f}, expected {} +- {:.4f}".format(what, rate, p, 4 * se)


@pytest.mark.parametrize("name", ["global1", "global2", "local"])
def test_rates_match_recipe(sampled, name):
    draws, recipe = sampled[name], RECIPE[name]
    assert_rate(np.array([d["flip"] for d in draws]), recipe["p_flip"], name + " flip")
    assert_rate(np.array([d["jitter"] is not None for d in draws]), recipe["p_jitter"], name + " jitter")
    assert_rate(np.array([d["gray"] for d in draws]), recipe["p_gray"], name + " gray")
    assert_rate(np.array([d["blur_sigma"] is not None for d in draws]), recipe["p_blur"], name + " blur")
    assert_rate(np.array([d["solarize"] for d in draws]), recipe["p_solarize"], name + " solarize")


def test_blur_sigma_uniform_on_0p1_2(sampled):
    sigmas = np.array([d["blur_sigma"] for d in sampled["global1"]])  # blurred every time
    assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0
    se = (1.9 / math.sqrt(12)) / math.sqrt(len(sigmas))
    assert abs(sigmas.mean() - 1.05) < 4 * se
    # uniform: each fifth of the range holds a fifth of the draws
    counts = np.histogram(sigmas, bins=5, range=(0.1, 2.0))[0] / len(sigmas)
    assert np.all(np.abs(counts - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(sigmas)))


def test_jitter_factors_and_order(sampled):
    jitters = [d["jitter"] for d in sampled["local"] if d["jitter"] is not None]
    n = len(jitters)
    for op, centre in [("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0), ("hue", 0.0)]:
        values = np.array([j[op] for j in jitters])
        half = JITTER[op]
        assert values.min() >= centre - half and values.max() <= centre + half, op
        se = (2 * half / math.sqrt(12)) / math.sqrt(n)
        assert abs(values.mean() - centre) < 4 * se, op
    orders = [tuple(j["order"]) for j in jitters]
    assert all(sorted(o) == sorted(JITTER) for o in orders)
    assert len(set(orders)) == 24  # every permutation occurs
    for op in JITTER:  # each op comes first a quarter of the time
        assert_rate(np.array([o[0] == op for o in orders]), 0.25, op + " first")


def torchvision_crops(height: int, width: int, scale, n: int, seed: int) -> np.ndarray:
    """(n, 4) torchvision RandomResizedCrop.get_params draws (top, left, h, w) under torch.manual_seed(seed)."""
    # v1's static get_params runs the same algorithm as v2.RandomResizedCrop (which has no public get_params)
    img = torch.zeros(1, height, width)
    torch.manual_seed(seed)
    return np.array([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)])


@pytest.mark.parametrize("height,width", [(84, 84), (40, 200)])
@pytest.mark.parametrize("scale", [(0.14, 1.0), (0.05, 0.14)])
def test_crops_match_torchvision_distribution(height, width, scale):
    n = N_DRAWS if (height, width) == (84, 84) else 2000
    spec = ViewSpec(64, scale)
    g = torch.Generator().manual_seed(7)
    ours = np.array([sample_view_params(spec, height, width, g)["crop"] for _ in range(n)])
    ref = torchvision_crops(height, width, scale, n, seed=7)
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    for name, f in [("area fraction", lambda c: c[:, 2] * c[:, 3] / float(height * width)),
                    ("log aspect", lambda c: np.log(c[:, 3] / c[:, 2])),
                    ("centre y", lambda c: (c[:, 0] + c[:, 2] / 2.0) / height),
                    ("centre x", lambda c: (c[:, 1] + c[:, 3] / 2.0) / width)]:
        a, b = f(ours), f(ref)
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se + 1e-12, "{}: {:.4f} vs {:.4f}".format(name, a.mean(), b.mean())
        # KS at alpha ~ 0.001 (conservative for these discrete distributions)
        assert ks_statistic(a, b) < 1.95 * math.sqrt(2.0 / n), name
        # our q-quantile sits at the reference's q-quantile, compared on the probability scale because the
        # values are discrete (whole pixels): the reference mass below / at-or-below it must bracket q
        for q in (0.1, 0.5, 0.9):
            x_q = np.sort(a)[int(q * n)]
            tol = 4 * math.sqrt(2 * q * (1 - q) / n)
            assert np.mean(b < x_q) - tol <= q <= np.mean(b <= x_q) + tol, (name, q)
    area = ours[:, 2] * ours[:, 3] / float(height * width)
    if (height, width) == (84, 84):
        # rounding h and w to pixels moves the area a little outside the requested range, never far
        assert area.min() >= scale[0] * 0.85 and area.max() <= min(1.0, scale[1] * 1.15)
        if scale == (0.14, 1.0):
            assert abs(area.mean() - 0.49) < 0.05  # ~U(0.14, 1) minus the 4:3 crops that do not fit


def test_crop_fallback_is_torchvisions_centre_crop():
    # area and ratio at their maxima: no attempt fits, so the fallback decides
    u = [1.0 - 1e-12] * NUM_UNIFORMS
    spec = ViewSpec(64, (0.14, 1.0))
    assert params_from_uniforms(spec, 84, 84, u)["crop"] == (0, 0, 84, 84)  # in-range ratio: whole image
    wide = params_from_uniforms(spec, 40, 200, u)["crop"]  # too wide: full height, width at ratio 4/3
    assert wide == (0, (200 - 53) // 2, 40, 53)
    tall = params_from_uniforms(spec, 200, 40, u)["crop"]  # too tall: full width, height at ratio 3/4
    assert tall == ((200 - 53) // 2, 0, 53, 40)


# ----------------------------------------------------------------------------------------------------------
# apply_view does what the parameters say
# ----------------------------------------------------------------------------------------------------------

def test_plain_view_is_normalised_pixels():
    img = random_image(32, 32)
    out = apply_view(img, ViewSpec(32, (0.1, 1.0)), plain_params(32, 32))
    expected = (img.float() / 255.0 - MEAN) / STD
    assert torch.allclose(out, expected, atol=1e-6)


def test_crop_resize_matches_torchvision_resized_crop():
    img = random_image(84, 84, seed=3)
    spec = ViewSpec(48, (0.1, 1.0))
    out = apply_view(img, spec, plain_params(84, 84, crop=(10, 20, 30, 41)))
    ref = F.resized_crop(img.float() / 255.0, 10, 20, 30, 41, [48, 48],
                         interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    assert torch.allclose(unnormalise(out), ref, atol=1e-5)


def test_constant_image_stays_constant_through_crop_and_resize():
    colour = torch.tensor([200, 50, 120], dtype=torch.uint8).view(3, 1, 1)
    img = colour.expand(3, 84, 84).contiguous()
    for crop, size in [((5, 7, 20, 25), 64), ((0, 0, 84, 84), 128), ((3, 3, 60, 60), 32)]:
        out = unnormalise(apply_view(img, ViewSpec(size, (0.1, 1.0)), plain_params(84, 84, crop=crop)))
        assert torch.allclose(out, colour.float().expand_as(out) / 255.0, atol=1e-5)


def test_flip_mirrors():
    img = random_image(84, 84, seed=5)
    spec = ViewSpec(64, (0.1, 1.0))
    base = plain_params(84, 84, crop=(4, 9, 50, 60))
    plain = apply_view(img, spec, base)
    flipped = apply_view(img, spec, dict(base, flip=True))
    assert torch.equal(flipped, plain.flip(-1))


def test_gray_gives_equal_channels():
    img = random_image(40, 40, seed=6)
    out = unnormalise(apply_view(img, ViewSpec(40, (0.1, 1.0)), plain_params(40, 40, gray=True)))
    assert torch.allclose(out[0], out[1], atol=1e-5) and torch.allclose(out[1], out[2], atol=1e-5)
    # ITU-R 601 luma, as PIL's convert("L") (torchvision's float kernel rounds 0.299 to 0.2989)
    x = img.float() / 255.0
    assert torch.allclose(out[0], 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2], atol=2e-4)


def test_solarize_inverts_pixels_at_or_above_half():
    # every uint8 level once (16 x 16), three channels with different orderings
    levels = torch.arange(256, dtype=torch.uint8).view(16, 16)
    img = torch.stack([levels, levels.flip(0), levels.t()])
    out = unnormalise(apply_view(img, ViewSpec(16, (0.1, 1.0)), plain_params(16, 16, solarize=True)))
    x = img.float() / 255.0
    expected = torch.where(x >= 0.5, 1.0 - x, x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out[0].flatten()[128:], 1.0 - x[0].flatten()[128:], atol=1e-5)  # 128..255 inverted


def test_blur_removes_high_frequencies():
    # 1-pixel checkerboard: all its energy sits at the highest frequency
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = (((yy + xx) % 2) * 255).to(torch.uint8).expand(3, 32, 32).contiguous()
    spec = ViewSpec(32, (0.1, 1.0))

    def high_freq_energy(view: torch.Tensor) -> float:
        x = unnormalise(view)[0]
        return float((x - x.mean()).pow(2).mean())

    energies = [high_freq_energy(apply_view(board, spec, plain_params(32, 32, blur_sigma=sigma)))
                for sigma in (None, 0.3, 0.5, 1.0, 2.0)]
    assert energies[0] == pytest.approx(0.25, abs=1e-4)  # pixels 0 / 1 around mean 0.5
    assert all(a > b for a, b in zip(energies, energies[1:]))  # a larger sigma blurs more
    assert energies[2] < 0.2 * energies[0] and energies[3] < 0.01 * energies[0]


def test_blur_is_torchvision_gaussian_blur_with_3_sigma_kernel():
    assert [blur_kernel_size(s, 64) for s in (0.1, 0.34, 1.0, 1.05, 2.0)] == [3, 5, 7, 9, 13]
    assert blur_kernel_size(2.0, 10) == 9 and blur_kernel_size(2.0, 9) == 9 and blur_kernel_size(2.0, 2) == 1
    img = random_image(24, 24, seed=8)
    out = unnormalise(apply_view(img, ViewSpec(24, (0.1, 1.0)), plain_params(24, 24, blur_sigma=1.2)))
    ref = F.gaussian_blur(img.float() / 255.0, [9, 9], [1.2, 1.2])
    assert torch.allclose(out, ref, atol=1e-5)


def test_jitter_is_torchvisions_ops_in_the_given_order():
    img = random_image(30, 30, seed=9)
    spec = ViewSpec(30, (0.1, 1.0))
    factors = dict(brightness=1.3, contrast=0.7, saturation=1.15, hue=-0.08)
    kernels = dict(brightness=F.adjust_brightness, contrast=F.adjust_contrast,
                   saturation=F.adjust_saturation, hue=F.adjust_hue)
    outputs = []
    for order in (["brightness", "contrast", "saturation", "hue"], ["hue", "saturation", "contrast", "brightness"]):
        out = unnormalise(apply_view(img, spec, plain_params(30, 30, jitter=dict(factors, order=order))))
        ref = img.float() / 255.0
        for op in order:
            ref = kernels[op](ref, factors[op])
        assert torch.allclose(out, ref, atol=2e-5), order
        outputs.append(out)
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)  # order matters, so it must be honoured


def test_neutral_jitter_factors_are_skipped_and_zero_factors_applied():
    """Factor 1 (0 for hue) leaves the view bit-identical, as torchvision's ColorJitter skips it; factor 0 is not
    neutral: no brightness is black, no contrast is the mean grey, no saturation is grey."""
    img = random_image(12, 12, seed=3)
    spec = ViewSpec(12, (0.1, 1.0))
    plain = apply_view(img, spec, plain_params(12, 12))
    neutral = dict(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=list(JITTER))
    assert torch.equal(apply_view(img, spec, plain_params(12, 12, jitter=neutral)), plain)
    x = img.float() / 255.0
    for op, expected in (("brightness", torch.zeros_like(x)),
                         ("contrast", F.adjust_contrast(x, 0.0)), ("saturation", F.rgb_to_grayscale(x, 3))):
        jitter = dict(neutral, order=[op], **{op: 0.0})
        out = unnormalise(apply_view(img, spec, plain_params(12, 12, jitter=jitter)))
        assert torch.allclose(out, expected, atol=1e-5), op


@pytest.mark.parametrize("crop", [(-1, 0, 4, 4), (0, -1, 4, 4), (0, 0, 0, 4), (0, 0, 4, 0), (7, 0, 4, 4),
                                  (0, 7, 4, 4)])
def test_crops_outside_the_image_are_refused(crop):
    with pytest.raises(ValueError, match="outside a 10x10 image"):
        apply_view(random_image(10, 10), ViewSpec(4, (0.1, 1.0)), plain_params(10, 10, crop=crop))


def test_a_one_pixel_crop_is_a_valid_crop():
    params = plain_params(10, 10, crop=(9, 9, 1, 1))
    view = unnormalise(apply_view(random_image(10, 10), ViewSpec(4, (0.1, 1.0)), params))
    torch.testing.assert_close(view, (random_image(10, 10)[:, 9:, 9:].float() / 255.0).expand(3, 4, 4))


def test_adjust_hue_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 40, 40, generator=g)
    # edge cases: greys, primaries and secondaries (ties between channels), black, white, exact quantised levels
    x[:, :4] = x[0:1, :4]
    specials = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1],
                             [0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.2], [0.2, 0.5, 0.5]], dtype=torch.float32)
    x[:, 4, :len(specials)] = specials.t()
    x[:, 5:10] = torch.randint(0, 256, (3, 5, 40), generator=g).float() / 255.0
    for hue in (-0.5, -0.1, -0.03, 0.0, 0.02, 0.1, 0.25, 0.5):
        assert torch.allclose(adjust_hue(x, hue), F.adjust_hue(x, hue), atol=1e-5), hue
    # one factor per image in a batch, for the batched path
    batch = torch.stack([x, x.flip(-1)])
    hues = torch.tensor([0.07, -0.2]).view(2, 1, 1)
    out = adjust_hue(batch, hues)
    assert torch.allclose(out[0], F.adjust_hue(x, 0.07), atol=1e-5)
    assert torch.allclose(out[1], F.adjust_hue(x.flip(-1), -0.2), atol=1e-5)


def test_apply_view_does_not_modify_its_input():
    img = random_image(32, 32, seed=10).float() / 255.0
    before = img.clone()
    params = plain_params(32, 32, flip=True, gray=True, blur_sigma=1.0, solarize=True,
                          jitter=dict(order=["brightness", "contrast", "saturation", "hue"], brightness=1.2,
                                      contrast=0.8, saturation=1.1, hue=0.05))
    apply_view(img, ViewSpec(32, (0.1, 1.0)), params)
    assert torch.equal(img, before)


# ----------------------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_views_different_seed_different_views():
    img = random_image(seed=11)
    a, b, c = (MultiCropAugmentation(seed=s)(img) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_global_rng_controls_the_unseeded_path():
    img = random_image(seed=12)
    aug = MultiCropAugmentation()
    torch.manual_seed(5)
    first = aug(img)
    again = aug(img)
    torch.manual_seed(5)
    replay = MultiCropAugmentation()(img)
    assert all(torch.equal(x, y) for x, y in zip(first, replay))
    assert not all(torch.equal(x, y) for x, y in zip(first, again))


def test_pickled_transform_continues_the_same_stream():
    aug = MultiCropAugmentation(seed=13)
    aug.sample_params(84, 84)  # advance the generator
    copy = pickle.loads(pickle.dumps(aug))
    assert copy.sample_params(84, 84) == aug.sample_params(84, 84)


def test_seeded_transform_differs_per_worker(monkeypatch):
    aug = MultiCropAugmentation(seed=14)
    draws = {}
    for worker_seed in (1000, 1001):
        info = SimpleNamespace(id=worker_seed - 1000, seed=worker_seed)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        worker_copy = pickle.loads(pickle.dumps(aug))  # each worker receives a copy of the transform
        draws[worker_seed] = [worker_copy.sample_params(84, 84) for _ in range(2)]
        # reproducible for a given worker seed
        again = pickle.loads(pickle.dumps(aug))
        assert [again.sample_params(84, 84) for _ in range(2)] == draws[worker_seed]
    assert draws[1000] != draws[1001]


def test_any_worker_seed_gives_a_valid_generator(monkeypatch):
    """DataLoader worker seeds are arbitrary 64-bit numbers; every mix of them with the transform's seed must stay a
    valid torch seed (below 2**64)."""
    for seed in (0, 2 ** 62):
        for worker_seed in range(48):
            monkeypatch.setattr(torch.utils.data, "get_worker_info",
                                lambda: SimpleNamespace(id=0, seed=2 ** 63 + worker_seed))
            MultiCropAugmentation(seed=seed).sample_params(8, 8)


class _RepeatImage(torch.utils.data.Dataset):
    def __init__(self, transform: MultiCropAugmentation) -> None:
        self.image, self.transform = random_image(seed=15), transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> List[torch.Tensor]:
        return self.transform(self.image)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("seed", [None, 16])
def test_dataloader_workers_are_reproducible_and_distinct(seed):
    aug = MultiCropAugmentation(global_size=16, local_size=8, num_local=1, seed=seed)

    def run() -> List[List[torch.Tensor]]:
        torch.manual_seed(17)
        loader = torch.utils.data.DataLoader(_RepeatImage(aug), batch_size=None, num_workers=2,
                                             multiprocessing_context="fork")
        return list(loader)

    first, second = run(), run()
    assert all(torch.equal(a, b) for x, y in zip(first, second) for a, b in zip(x, y))
    # items 0 and 1 come from different workers: same image, different augmentations
    assert not torch.equal(first[0][0], first[1][0])
    assert len({tuple(item[0].flatten()[:8].tolist()) for item in first}) == 4


def test_a_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed must be >= 0 or None, got -1"):
        MultiCropAugmentation(seed=-1)


def test_a_grayscale_view_keeps_three_equal_channels():
    view = apply_view(random_image(), ViewSpec(8, (0.1, 1.0)), plain_params(84, 84, gray=True))
    assert view.shape == (3, 8, 8)
    pixels = unnormalise(view)
    torch.testing.assert_close(pixels[0], pixels[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[1], pixels[2], atol=1e-5, rtol=0)
