"""Tests for utils/gpu_multicrop.py: the batched multi-crop against the per-image path (utils/multicrop.py), and
InMemoryImages.

Three levels of equivalence with the per-image path: (1) the same uniforms give the same parameters
(``params_from_uniforms``), row by row; (2) the same parameters give the same pixels (``apply_view``), sample by
sample; (3) independently drawn, the two paths agree statistically (crop distributions by a two-sample KS test,
op rates against DINO's recipe, and the per-channel moments of the normalised views).
"""
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from utils import gpu_multicrop
from utils.datasets import InMemoryImages
from utils.gpu_multicrop import (BatchedMultiCrop, _adjust_hue_, batched_blur_kernel_sizes,
                                 batched_params_from_uniforms)
from utils.multicrop import (JITTER_OPS, NUM_UNIFORMS, MultiCropAugmentation, ViewSpec, adjust_hue, apply_view,
                             blur_kernel_size, dino_view_specs, params_from_uniforms)
from tools.toydata import p1_image
from test_multicrop import assert_rate  # the same binomial-rate check as the per-image tests

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
# DINO's recipe (main_dino.py DataAugmentationDINO), written out here independently of the code under test
RECIPE = {
    "global1": dict(flip=0.5, jitter=0.8, gray=0.2, blur=1.0, solarize=0.0),
    "global2": dict(flip=0.5, jitter=0.8, gray=0.2, blur=0.1, solarize=0.2),
    "local": dict(flip=0.5, jitter=0.8, gray=0.2, blur=0.5, solarize=0.0),
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these small ops only lose from threading on a busy 2-core machine. Each test also
    computes the module's constants afresh (mutation testing forks every run from one process: a cache filled
    there would hide a wrong constant)."""
    gpu_multicrop._DEVICE_CONSTANTS.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)


def toy_batch(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Generated problem-1 images (objects, textures, colour), uint8 (B, 3, size, size)."""
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(p1_image(i % 8, rng, size, "mini").transpose(2, 0, 1).copy())
                        for i in range(batch)])


def row_params(p: Dict[str, torch.Tensor], b: int) -> Dict[str, Any]:
    """Row b of a batched parameter dict in ``apply_view``'s format."""
    jitter = None
    if bool(p["jitter"][b]):
        jitter = {"order": [JITTER_OPS[k] for k in p["order"][b].tolist()]}
        jitter.update({JITTER_OPS[k]: float(p["factors"][b, k]) for k in range(4)})
    return {"crop": tuple(int(v) for v in p["crop"][b]), "flip": bool(p["flip"][b]), "jitter": jitter,
            "gray": bool(p["gray"][b]), "blur_sigma": float(p["sigma"][b]) if bool(p["blur"][b]) else None,
            "solarize": bool(p["solarize"][b])}


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical CDFs."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# ----------------------------------------------------------------------------------------------------------
# (1) same uniforms -> same parameters
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(84, 84), (40, 200), (200, 40), (8, 300)])
def test_params_equal_params_from_uniforms_row_by_row(height, width):
    g = torch.Generator().manual_seed(height * 1000 + width)
    u = torch.rand(600, NUM_UNIFORMS, generator=g, dtype=torch.float64)
    u[0] = 0.0  # smallest area and ratio in every attempt
    u[1] = 1.0 - 1e-12  # largest: nothing fits an 84x84 image -> the centre-crop fallback
    for spec in dino_view_specs(32, 16, 1) + [ViewSpec(16, (0.9, 1.0), brightness=0.0, hue=0.0, name="odd")]:
        batched = batched_params_from_uniforms(spec, height, width, u)
        for b in range(u.shape[0]):
            assert row_params(batched, b) == params_from_uniforms(spec, height, width, u[b].tolist()), (spec.name, b)
    # the crop fallback really was exercised (area fraction 1 never fits a 4:3 box in these images)
    fallback = batched_params_from_uniforms(ViewSpec(16, (1.0, 1.0), ratio=(2.0, 3.0)), height, width, u[:4])
    expected = params_from_uniforms(ViewSpec(16, (1.0, 1.0), ratio=(2.0, 3.0)), height, width, u[0].tolist())
    assert tuple(fallback["crop"][0].tolist()) == expected["crop"]


def test_sample_params_draws_one_block_per_view_from_the_generator():
    aug = BatchedMultiCrop(32, 16, 3, generator=torch.Generator().manual_seed(11))
    params = aug.sample_params(5, 40, 30)
    g = torch.Generator().manual_seed(11)
    for spec, p in zip(aug.specs, params):
        u = torch.rand(5, NUM_UNIFORMS, generator=g, dtype=torch.float64)  # the documented layout
        expected = batched_params_from_uniforms(spec, 40, 30, u)
        for key in expected:
            assert torch.equal(p[key], expected[key]), (spec.name, key)


def test_blur_kernel_sizes_follow_the_per_image_rule():
    sigmas = np.concatenate([np.linspace(0.1, 2.0, 97), [1.0 / 3.0, 2.0 / 3.0, 1.0, 5.0]])
    for size in (5, 8, 9, 16, 64, 128):
        assert batched_blur_kernel_sizes(sigmas, size).tolist() == [blur_kernel_size(s, size) for s in sigmas]


# ----------------------------------------------------------------------------------------------------------
# (2) same parameters -> same pixels
# ----------------------------------------------------------------------------------------------------------

def force_ops(params: List[Dict[str, torch.Tensor]], seed: int) -> List[Dict[str, torch.Tensor]]:
    """Switch every op on for a random half of the samples, so each op (and each jitter order) is exercised."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in params:
        p = dict(p)
        n = p["flip"].shape[0]
        for key in ("flip", "jitter", "gray", "blur", "solarize"):
            p[key] = p[key] | (torch.rand(n, generator=g) < 0.5)
        out.append(p)
    return out


@pytest.mark.parametrize("height,width,global_size,local_size", [
    (84, 84, 128, 64),  # the recipe: enlarging crops
    (70, 50, 32, 16),  # shrinking crops (antialiasing), non-square input
    (33, 47, 24, 13),  # odd sizes; 13 px views cap the blur kernel
])
def test_pixels_equal_apply_view_sample_by_sample(height, width, global_size, local_size):
    aug = BatchedMultiCrop(global_size, local_size, 3, generator=torch.Generator().manual_seed(height))
    images = random_batch(6, height, width, seed=width)
    for forced in (False, True):
        params = aug.sample_params(6, height, width)
        if forced:
            params = force_ops(params, seed=height + width)
        views = aug.apply(images, params)
        for v, (spec, p) in enumerate(zip(aug.specs, params)):
            assert views[v].shape == (6, 3, spec.size, spec.size)
            for b in range(6):
                ref = apply_view(images[b], spec, row_params(p, b))
                err = float((views[v][b] - ref).abs().max())
                # float32 rounding only: a different order of the same sums, in units of normalised pixels
                assert err < 1e-4, "view {} sample {}: max error {:.2e} with {}".format(v, b, err, row_params(p, b))


def test_in_place_hue_is_the_per_image_hue():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 20, 20, generator=g)
    x[:, :, :3] = x[:, :1, :3]  # greys
    x[:, 0, 3:6] = x[:, 1, 3:6]  # ties between the max channels
    x[:, :, 6] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1)  # saturated
    x[:, :, 7:10] = torch.randint(0, 256, (8, 3, 3, 20), generator=g).float() / 255.0
    factors = torch.tensor([-0.5, -0.1, -0.03, 0.0, 0.02, 0.1, 0.25, 0.5])
    ours = x.clone()
    _adjust_hue_(ours, factors)
    assert torch.allclose(ours, adjust_hue(x, factors.view(-1, 1, 1)), atol=1e-5)
    for i in (0, 3, 5):
        assert torch.allclose(ours[i], F.adjust_hue(x[i], float(factors[i])), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# (3) drawn independently, the two paths agree statistically
# ----------------------------------------------------------------------------------------------------------

N_DRAWS = 3000


@pytest.fixture(scope="module")
def both_paths():
    """Parameters of N_DRAWS images of 32x32 from each path: {view name: (batched dict, list of per-image dicts)}."""
    batched = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(1)).sample_params(N_DRAWS, 32, 32)
    per_image = MultiCropAugmentation(32, 16, 2, seed=2)
    draws = [per_image.sample_params(32, 32) for _ in range(N_DRAWS)]
    names = ["global1", "global2", "local", "local"]
    return {name: (batched[i], [d[i] for d in draws]) for i, name in enumerate(names) if i < 3}


@pytest.mark.parametrize("name", ["global1", "global2", "local"])
def test_crop_distributions_match_the_per_image_path(both_paths, name):
    batched, per_image = both_paths[name]
    ours = batched["crop"].numpy().astype(float)
    ref = np.array([d["crop"] for d in per_image], dtype=float)
    for what, f in [("area fraction", lambda c: c[:, 2] * c[:, 3] / (32.0 * 32.0)),
                    ("log aspect", lambda c: np.log(c[:, 3] / c[:, 2])),
                    ("centre y", lambda c: (c[:, 0] + c[:, 2] / 2.0) / 32.0)]:
        a, b = f(ours), f(ref)
        # KS critical value at alpha ~ 0.001 for two samples of n: 1.95 * sqrt(2 / n) (conservative for these
        # discrete distributions); means within 4 standard errors of their difference
        assert ks_statistic(a, b) < 1.95 * math.sqrt(2.0 / N_DRAWS), (name, what)
        se = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se + 1e-12, (name, what, a.mean(), b.mean())
        for q in (0.1, 0.5, 0.9):  # quantiles: a few pixels' worth at most
            assert abs(np.quantile(a, q) - np.quantile(b, q)) <= 0.1 * (np.quantile(b, 0.95) - np.quantile(b, 0.05)) \
                + 1e-9, (name, what, q)


@pytest.mark.parametrize("name", ["global1", "global2", "local"])
def test_op_rates_match_the_recipe_and_the_per_image_path(both_paths, name):
    batched, per_image = both_paths[name]
    recipe = RECIPE[name]
    ours = {"flip": batched["flip"].numpy(), "jitter": batched["jitter"].numpy(), "gray": batched["gray"].numpy(),
            "blur": batched["blur"].numpy(), "solarize": batched["solarize"].numpy()}
    ref = {"flip": np.array([d["flip"] for d in per_image]),
           "jitter": np.array([d["jitter"] is not None for d in per_image]),
           "gray": np.array([d["gray"] for d in per_image]),
           "blur": np.array([d["blur_sigma"] is not None for d in per_image]),
           "solarize": np.array([d["solarize"] for d in per_image])}
    for op, p in recipe.items():
        assert_rate(ours[op], p, "batched {} {}".format(name, op))
        assert_rate(ref[op], p, "per-image {} {}".format(name, op))
    # blur sigma ~ U(0.1, 2) where applied; jitter factors within the recipe's ranges, mean at the neutral value
    sigma = batched["sigma"].numpy()[ours["blur"]]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert abs(sigma.mean() - 1.05) < 4 * (1.9 / math.sqrt(12)) / math.sqrt(len(sigma))
    factors = batched["factors"].numpy()[ours["jitter"]]
    for k, (centre, half) in enumerate([(1.0, 0.4), (1.0, 0.4), (1.0, 0.2), (0.0, 0.1)]):
        assert factors[:, k].min() >= centre - half and factors[:, k].max() <= centre + half
        assert abs(factors[:, k].mean() - centre) < 4 * (2 * half / math.sqrt(12)) / math.sqrt(len(factors))
    # each op comes first in the jitter order a quarter of the time
    first = batched["order"].numpy()[ours["jitter"], 0]
    for k in range(4):
        assert_rate(first == k, 0.25, "{} {} first".format(name, JITTER_OPS[k]))


def view_moments(views: List[torch.Tensor]) -> np.ndarray:
    """(B, 3 view kinds, 3 channels, mean/std): per sample, the spatial mean and std of each normalised channel;
    the kinds are global 1, global 2 and the local views (averaged)."""
    def per_sample(v: torch.Tensor) -> np.ndarray:  # (B, 3, 2)
        flat = v.flatten(2)
        return torch.stack([flat.mean(-1), flat.std(-1)], -1).numpy()

    return np.stack([per_sample(views[0]), per_sample(views[1]),
                     np.mean([per_sample(v) for v in views[2:]], axis=0)], 1)


def test_output_moments_match_the_per_image_path():
    """Per-channel mean and std of the normalised views of a fixed image set, batched vs per-image path.

    Paired design: each image gets R independent draws from each path; per image, the difference of the two
    R-draw averages has mean 0 if the paths agree, and the image-to-image spread (large: the images differ in
    colour) cancels. The tolerance is 5 standard errors of the mean difference over the images (a false alarm
    every ~10^6 runs per moment) plus 0.005 normalised units for float differences.
    """
    images = toy_batch(48, 32, seed=3)
    rounds = 48
    batched = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(5))
    per_image = MultiCropAugmentation(32, 16, 2, seed=6)

    def per_image_moments() -> np.ndarray:
        return np.mean([view_moments([torch.stack(v) for v in zip(*[per_image(img) for img in images])])
                        for _ in range(rounds)], axis=0)

    ours = np.mean([view_moments(batched(images)) for _ in range(rounds)], axis=0)  # (images, kind, ch, 2)
    ref = per_image_moments()

    def check(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a - b
        se = d.std(0, ddof=1) / math.sqrt(d.shape[0])
        return np.abs(d.mean(0)) / (5 * se + 0.005)  # < 1: within tolerance

    ratio = check(ours, ref)
    assert (ratio < 1).all(), "moment differences in units of their tolerance: {}".format(ratio)
    # and the tolerance is tight enough to notice a plausible bug: a per-image path that never blurs leaves it
    # (by ~2x; one that never solarizes global 2 by ~1.1x, so subtler changes than these are not resolved)
    per_image.specs = [dataclasses.replace(spec, p_blur=0.0) for spec in per_image.specs]
    assert (check(ours, per_image_moments()) > 1).any()


# ----------------------------------------------------------------------------------------------------------
# contract
# ----------------------------------------------------------------------------------------------------------

def test_shapes_dtype_device_and_range():
    aug = BatchedMultiCrop(generator=torch.Generator().manual_seed(0))
    views = aug(random_batch(3, 84, 84))
    assert len(views) == 8
    lo, hi = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD
    for i, v in enumerate(views):
        size = 128 if i < 2 else 64
        assert v.shape == (3, 3, size, size) and v.dtype == torch.float32 and v.device.type == "cpu"
        assert type(v) is torch.Tensor and torch.isfinite(v).all()
        assert (v >= lo - 1e-5).all() and (v <= hi + 1e-5).all()
    assert len(BatchedMultiCrop(40, 24, 0)(random_batch(2, 30, 50))) == 2


def test_float32_under_the_callers_autocast():
    images = random_batch(2, 40, 40)
    plain = BatchedMultiCrop(32, 16, 1, generator=torch.Generator().manual_seed(2))(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = BatchedMultiCrop(32, 16, 1, generator=torch.Generator().manual_seed(2))(images)
    for a, b in zip(plain, autocast):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_bad_inputs_raise():
    aug = BatchedMultiCrop(32, 16, 1)
    with pytest.raises(ValueError, match=r"^expected a \(B, 3, H, W\) image batch, got shape \(3, 20, 20\)$"):
        aug(torch.zeros(3, 20, 20, dtype=torch.uint8))  # not a batch
    with pytest.raises(ValueError, match=r"got shape \(2, 1, 20, 20\)$"):
        aug(torch.zeros(2, 1, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^need parameters for 3 views, got 1$"):
        aug.apply(torch.zeros(2, 3, 20, 20, dtype=torch.uint8), [{}])
    with pytest.raises(ValueError):
        aug(torch.zeros(2, 3, 20, 20, dtype=torch.int32))
    with pytest.raises(TypeError):
        aug(np.zeros((2, 3, 20, 20), dtype=np.uint8))
    with pytest.raises(ValueError):
        aug.apply(random_batch(2, 20, 20), aug.sample_params(3, 20, 20))  # parameters for another batch size
    with pytest.raises(ValueError):
        aug.apply(random_batch(2, 20, 20), aug.sample_params(2, 40, 40))  # boxes outside the images


def test_seeded_generator_is_deterministic_and_seeds_differ():
    images = random_batch(4, 40, 40)
    a = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(7))(images)
    b = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(7))(images)
    c = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(8))(images)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.allclose(x, y) for x, y in zip(a, c))
    # without a generator the global RNG decides, so torch.manual_seed reproduces a run
    aug = BatchedMultiCrop(32, 16, 2)
    torch.manual_seed(3)
    d = aug(images)
    torch.manual_seed(3)
    e = aug(images)
    assert all(torch.equal(x, y) for x, y in zip(d, e))


def test_different_images_and_views_get_different_crops():
    aug = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(9))
    params = aug.sample_params(64, 84, 84)
    for p in params:
        assert len({tuple(c) for c in p["crop"].tolist()}) > 50  # per sample, not one box for the batch
    assert not torch.equal(params[2]["crop"], params[3]["crop"])  # per view too
    same = random_batch(1, 40, 40).expand(6, 3, 40, 40).contiguous()  # six copies of one image
    views = aug(same)
    for v in views:
        assert not torch.allclose(v[0], v[1]) and not torch.allclose(v[2], v[5])


def test_solid_colour_stays_solid_and_keeps_its_colour_without_colour_ops():
    colour = torch.tensor([200, 40, 120], dtype=torch.uint8)
    images = colour.view(1, 3, 1, 1).expand(32, 3, 50, 60).contiguous()
    aug = BatchedMultiCrop(32, 16, 2, generator=torch.Generator().manual_seed(4))
    params = force_ops(aug.sample_params(32, 50, 60), seed=1)
    views = aug.apply(images, params)
    expected = (colour.float().view(3, 1, 1) / 255.0 - MEAN) / STD
    plain = 0
    for v, p in zip(views, params):
        # crop, resize, flip, jitter (contrast uses the image mean), grey, blur and solarize all keep a flat image
        # flat: per sample and channel, the spatial spread is float noise
        assert float(v.flatten(2).std(-1).max()) < 1e-4
        untouched = ~(p["jitter"] | p["gray"] | p["solarize"])
        if untouched.any():
            plain += int(untouched.sum())
            assert torch.allclose(v[untouched], expected.expand_as(v[untouched]), atol=1e-4)
        changed = p["gray"] | p["solarize"]  # grey and solarized colours differ from the input colour
        assert ((v[changed] - expected).abs().amax(dim=(1, 2, 3)) > 1e-2).all()
    assert plain > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = random_batch(8, 84, 84)
    cpu = BatchedMultiCrop(generator=torch.Generator().manual_seed(0))(images)
    gpu = BatchedMultiCrop(generator=torch.Generator().manual_seed(0))(images.cuda())
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda" and b.dtype == torch.float32
        assert torch.allclose(a, b.cpu(), atol=1e-3)


# ----------------------------------------------------------------------------------------------------------
# InMemoryImages
# ----------------------------------------------------------------------------------------------------------

def write_images(folder: Path, count: int, size=(24, 20), start: int = 0) -> List[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    arrays = []
    for i in range(start, start + count):
        a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(a).save(str(folder / "{:04d}.png".format(i)))
        arrays.append(a)
    return arrays


def test_in_memory_images_decode_once_into_one_tensor(tmp_path):
    arrays = write_images(tmp_path / "imgs", 5)
    ds = InMemoryImages(tmp_path / "imgs", workers=2)
    assert len(ds) == 5 and ds.images.shape == (5, 3, 20, 24) and ds.images.dtype == torch.uint8
    assert ds.nbytes == 5 * 3 * 20 * 24
    for i, a in enumerate(arrays):
        assert torch.equal(ds[i], torch.from_numpy(a).permute(2, 0, 1))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 20, 24) and batch.dtype == torch.uint8
    assert len(InMemoryImages(tmp_path / "imgs", max_images=3)) == 3


def test_in_memory_images_name_the_first_odd_sized_and_corrupt_files(tmp_path):
    write_images(tmp_path / "imgs", 4)
    write_images(tmp_path / "imgs", 1, size=(30, 20), start=2)  # replaces 0002.png with a 30x20 image
    write_images(tmp_path / "imgs", 1, size=(10, 10), start=3)  # and 0003.png with a 10x10 one
    with pytest.raises(ValueError, match="0002.png") as info:
        InMemoryImages(tmp_path / "imgs")
    assert "0003.png" not in str(info.value) and "0002.png is 30x20 but 0000.png is 24x20" in str(info.value)
    (tmp_path / "bad").mkdir()
    write_images(tmp_path / "bad", 2)
    (tmp_path / "bad" / "0001.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="0001.png"):
        InMemoryImages(tmp_path / "bad")


def test_in_memory_images_cache_round_trip_and_invalidation(tmp_path):
    folder, cache = tmp_path / "imgs", tmp_path / "cache" / "mini.npy"
    write_images(folder, 3)
    first = InMemoryImages(folder, cache_path=cache)
    assert not first.from_cache and cache.is_file() and Path(str(cache) + ".json").is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]  # temp files renamed or removed
    second = InMemoryImages(folder, cache_path=cache)
    assert second.from_cache and torch.equal(first.images, second.images)
    # the cache really is what gets loaded: alter its pixels behind the dataset's back
    array = np.load(str(cache))
    array[0, 0, 0, 0] ^= 0xFF
    np.save(str(cache), array)
    assert int(InMemoryImages(folder, cache_path=cache).images[0, 0, 0, 0]) == int(array[0, 0, 0, 0])
    # a new file changes the key: re-decoded, and the cache rewritten
    write_images(folder, 1, start=3)
    third = InMemoryImages(folder, cache_path=cache)
    assert not third.from_cache and len(third) == 4
    assert torch.equal(third.images[:3], first.images)
    assert json.loads(Path(str(cache) + ".json").read_text())["count"] == 4
    assert InMemoryImages(folder, cache_path=cache).from_cache
    # so does a file replaced under the same name (a flat image: its PNG has another byte size)
    Image.new("RGB", (24, 20), (9, 99, 199)).save(str(folder / "0001.png"))
    replaced = InMemoryImages(folder, cache_path=cache)
    assert not replaced.from_cache and replaced.images[1, :, 0, 0].tolist() == [9, 99, 199]
    third = replaced
    # a damaged cache is re-decoded, not trusted
    cache.write_bytes(b"garbage")
    fourth = InMemoryImages(folder, cache_path=cache)
    assert not fourth.from_cache and torch.equal(fourth.images, third.images)
    # a write killed between the key's "being written" and the array is re-decoded: the key matches nothing
    Path(str(cache) + ".json").write_text(json.dumps({"key": None, "count": None, "shape": None, "folder": "x"}))
    assert not InMemoryImages(folder, cache_path=cache).from_cache


@pytest.mark.parametrize("case", ["user_npy", "csv", "user_npy_and_json"])
def test_an_image_cache_path_holding_a_file_we_did_not_write_is_refused_before_decoding(tmp_path, case):
    """Before: `p1_ssl_pretrain.py --batched-aug --image-cache PATH` overwrote whatever file was at PATH (a user's
    .npy, office/train.csv by a slip). A file there is replaced only with our key file beside it."""
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    cache = tmp_path / ("train.csv" if case == "csv" else "mine.npy")
    if case == "csv":
        cache.write_text("id,filename,label\n0,a.jpg,1\n")
    else:
        np.save(str(cache), np.arange(5))
    if case == "user_npy_and_json":
        Path(str(cache) + ".json").write_text('{"note": "mine"}')
    before = cache.read_bytes()
    with pytest.raises(ValueError, match="refusing to replace {}".format(cache)):
        InMemoryImages(folder, cache_path=cache)
    assert cache.read_bytes() == before
