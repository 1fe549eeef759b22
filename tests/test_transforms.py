"""Segmentation pair transforms keep image and mask aligned pixel for pixel; classification eval view."""
import collections

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from utils.transforms import RandomRot90, classify_eval_transform, normalize, seg_train_transform

SIZE = 12


def _coordinate_pair():
    """An image whose channels 0/1 hold each pixel's row/column and a mask holding row * SIZE + column: a pair is
    aligned exactly when mask == image[0] * SIZE + image[1] everywhere."""
    rows = torch.arange(SIZE).view(-1, 1).expand(SIZE, SIZE)
    cols = torch.arange(SIZE).view(1, -1).expand(SIZE, SIZE)
    image = tv_tensors.Image(torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8))
    return image, tv_tensors.Mask(rows * SIZE + cols)


def _dihedral_index(mask):
    """Which of the 8 flips/rotations of the original mask this is (None when it is none of them)."""
    original = _coordinate_pair()[1].as_subclass(torch.Tensor)
    views = [torch.rot90(m, k, dims=(-2, -1)) for m in (original, original.flip(-1)) for k in range(4)]
    return next((i for i, v in enumerate(views) if torch.equal(mask, v)), None)


@pytest.mark.parametrize("transform", [RandomRot90(), seg_train_transform(SIZE, min_scale=1.0, color_jitter=0.0)],
                         ids=["RandomRot90", "seg_train_transform"])
def test_pair_transforms_keep_image_and_mask_aligned(transform):
    """For many seeds the image and the mask move together; with crop = tile and scale 1 the resampling is exact,
    so every output is one of the 8 flips/rotations of the tile, and all 8 occur."""
    seen = set()
    for seed in range(64):
        torch.manual_seed(seed)
        image, mask = transform(*_coordinate_pair())
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        assert image.shape == (3, SIZE, SIZE) and mask.shape == (SIZE, SIZE)
        assert torch.equal(mask, image[0].to(torch.int64) * SIZE + image[1].to(torch.int64)), "seed {}".format(seed)
        seen.add(_dihedral_index(mask))
    expected = set(range(4)) if isinstance(transform, RandomRot90) else set(range(8))
    assert seen == expected


@pytest.mark.parametrize("transform, views", [(RandomRot90(), 4),
                                               (seg_train_transform(SIZE, min_scale=1.0, color_jitter=0.0), 8)],
                         ids=["RandomRot90", "seg_train_transform"])
def test_every_orientation_is_equally_likely(transform, views):
    """k uniform in 0..3 (and flips with p 0.5): 800 draws, each orientation within 4.5 standard deviations."""
    torch.manual_seed(0)
    counts = collections.Counter(_dihedral_index(transform(*_coordinate_pair())[1].as_subclass(torch.Tensor))
                                 for _ in range(800))
    mean = 800 / views
    sd = (800 * (1 / views) * (1 - 1 / views)) ** 0.5
    assert sorted(counts) == list(range(views))
    assert all(abs(n - mean) < 4.5 * sd for n in counts.values()), counts


def test_rot90_rotates_masks_with_a_leading_dimension():
    image, mask = _coordinate_pair()
    for seed in range(16):
        torch.manual_seed(seed)
        out_image, out_mask = RandomRot90()(image, tv_tensors.Mask(mask[None]))
        assert torch.equal(out_mask[0], out_image[0].to(torch.int64) * SIZE + out_image[1].to(torch.int64))


def test_colour_jitter_changes_the_image_only():
    """With jitter the image's colours move, the mask stays an exact flip/rotation of the original."""
    changed = 0
    for seed in range(16):
        torch.manual_seed(seed)
        image, mask = seg_train_transform(SIZE, min_scale=1.0, color_jitter=0.4)(*_coordinate_pair())
        index = _dihedral_index(mask.as_subclass(torch.Tensor))
        assert index is not None
        # the image's geometry, read back from the mask, with the original colours
        rows, cols = mask.as_subclass(torch.Tensor) // SIZE, mask.as_subclass(torch.Tensor) % SIZE
        changed += not torch.equal(image[:2].to(torch.int64), torch.stack([rows, cols]))
    assert changed >= 14


def test_seg_train_transform_recipe():
    """Scale-and-crop over 0.25..1 of the area at aspect 3/4..4/3 to the crop size (antialiased), flips with
    p 0.5, 90-degree rotations, colour jitter 0.2 (hue a quarter of it, at most 0.5); no jitter op at 0."""
    crop, hflip, vflip, rot, jitter = seg_train_transform(64).transforms
    assert isinstance(crop, v2.RandomResizedCrop) and tuple(crop.size) == (64, 64) and crop.antialias
    assert crop.scale == (0.25, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert isinstance(hflip, v2.RandomHorizontalFlip) and isinstance(vflip, v2.RandomVerticalFlip)
    assert hflip.p == vflip.p == 0.5 and isinstance(rot, RandomRot90)
    assert isinstance(jitter, v2.ColorJitter)
    assert jitter.brightness == jitter.contrast == jitter.saturation == pytest.approx((0.8, 1.2))
    assert jitter.hue == pytest.approx((-0.05, 0.05))
    assert seg_train_transform(64, color_jitter=3.0).transforms[-1].hue == pytest.approx((-0.5, 0.5))
    assert seg_train_transform(64, min_scale=0.5).transforms[0].scale == (0.5, 1.0)
    assert not any(isinstance(op, v2.ColorJitter) for op in seg_train_transform(64, color_jitter=0.0).transforms)


def test_classify_eval_transform_is_antialiased():
    """1-px stripes shrunk 3x come out near their mean grey (without antialiasing: every third column, 0 or 255)."""
    image = torch.zeros(3, 30, 30, dtype=torch.uint8)
    image[:, :, 1::2] = 255
    out = classify_eval_transform(10)(image)
    assert float(out.max() - out.min()) < 60


def test_classify_eval_transform_resizes_the_short_side_and_centre_crops():
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, 6:34] = 200  # the centre (a dark margin of 6 px each side, beyond the crop)
    out = classify_eval_transform(10)(image)
    assert out.dtype == torch.float32 and out.shape == (3, 10, 10)
    torch.testing.assert_close(out, torch.full((3, 10, 10), 200.0))


def test_normalize_uses_imagenet_statistics_in_0_255():
    images = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255 + torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(normalize(images), torch.ones(1, 3, 1, 1))
