"""Segmentation pair transforms keep image and mask aligned pixel for pixel; classification eval view."""
import pytest
import torch
from torchvision import tv_tensors

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
