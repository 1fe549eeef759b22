"""utils/predict.py's helpers: padding to the model's input multiple, test-time sizes, resizing, the argmax and the
errors (TTA and ensembles end to end: tests/test_p2_inference.py)."""
import pytest
import torch
import torch.nn.functional as F

from p2_inference import predict_ensemble
from utils.predict import _pad_to_multiple, predict_classes, predict_probs, resize_bilinear, scaled_size


def test_pad_to_multiple_reflects_on_the_bottom_and_right():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    padded = _pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., :5, :6], x)  # the image stays at the top left
    # reflection without repeating the edge: row 5 = row 3, 6 = 2, 7 = 1; columns 6 = 4, 7 = 3
    assert torch.equal(padded[..., 5:8, :6], x[..., [3, 2, 1], :])
    assert torch.equal(padded[..., :5, 6:8], x[..., :, [4, 3]])
    assert _pad_to_multiple(x, 1) is x and _pad_to_multiple(torch.zeros(1, 1, 8, 4), 4).shape == (1, 1, 8, 4)
    # only the rows need padding (and the other way round): the columns stay as they are
    assert torch.equal(_pad_to_multiple(x, 2)[..., :5, :], x) and _pad_to_multiple(x, 2).shape == (1, 1, 6, 6)
    wide = torch.arange(32.0).view(1, 1, 4, 8)
    assert _pad_to_multiple(wide[..., :6], 4).shape == (1, 1, 4, 8)


def test_pad_to_multiple_replicates_what_is_too_small_to_reflect():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # padding 6 rows / 5 columns: more than reflection can give
    padded = _pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded, F.pad(x, (0, 5, 0, 6), mode="replicate"))
    tall = torch.arange(8.0).view(1, 1, 8, 1)  # rows need none, the single column needs 3: replicate
    assert torch.equal(_pad_to_multiple(tall, 4), tall.expand(1, 1, 8, 4))
    for shape, pad in (((1, 1, 4, 2), (0, 2, 0, 0)), ((1, 1, 2, 4), (0, 0, 0, 2))):  # padding = the side: replicate
        x = torch.arange(8.0).view(shape)
        assert torch.equal(_pad_to_multiple(x, 4), F.pad(x, pad, mode="replicate"))


def test_scaled_size_rounds_half_up_and_keeps_one_pixel():
    assert scaled_size(30, 42, 0.75) == (23, 32)  # 22.5 -> 23, 31.5 -> 32
    assert scaled_size(30, 42, 1.0) == (30, 42)
    assert scaled_size(10, 20, 1.26) == (13, 25)
    assert scaled_size(3, 5, 0.01) == (1, 1)


def test_resize_bilinear_antialiases_only_when_shrinking():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 10)
    assert resize_bilinear(x, (12, 10)) is x
    for size, shrink in (((6, 10), True), ((12, 5), True), ((12, 16), False), ((19, 10), False), ((6, 16), True)):
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        assert torch.equal(resize_bilinear(x, size), expected), size


class _Columns(torch.nn.Module):
    """Logits that favour class 1 on the left half of the image and class 0 on the right."""

    def forward(self, x):
        w = x.shape[-1]
        left = (torch.arange(w) < w // 2).float().expand(x.shape[0], 1, x.shape[-2], w)
        return {"out": torch.cat([1 - left, left], 1) * 4.0}


def test_predict_classes_is_the_argmax_of_the_probabilities():
    images = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    probs = predict_probs(_Columns(), images, {"arch": "deeplabv3"})
    assert probs.shape == (2, 2, 4, 6) and torch.allclose(probs.sum(1), torch.ones(2, 4, 6))
    classes = predict_classes(_Columns(), images, {"arch": "deeplabv3"})
    assert classes.dtype == torch.int64 and classes.shape == (2, 4, 6)
    assert torch.equal(classes, probs.argmax(1)) and classes[0, 0].tolist() == [1, 1, 1, 0, 0, 0]


def test_inputs_are_padded_to_the_models_multiple_and_cropped_back():
    class _NeedsMultipleOf8(_Columns):
        def forward(self, x):
            assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
            return super().forward(x)

    images = torch.randint(0, 256, (1, 3, 13, 21), dtype=torch.uint8)
    probs = predict_probs(_NeedsMultipleOf8(), images, {"arch": "unet", "depth": 3})
    assert probs.shape == (1, 2, 13, 21)
    # the padded image is 16 x 24: its left half (12 columns) favours class 1
    assert predict_classes(_NeedsMultipleOf8(), images, {"arch": "unet", "depth": 3})[0, 0].tolist() == \
        [1] * 12 + [0] * 9


def test_an_ensemble_of_one_is_that_model_without_tta_by_default():
    images = torch.randint(0, 256, (1, 3, 6, 8), dtype=torch.uint8)
    member = (_Columns(), {"arch": "deeplabv3"})
    assert torch.equal(predict_ensemble([member], images), predict_probs(member[0], images, member[1]))
    assert torch.equal(predict_ensemble([member], images), predict_probs(member[0], images, member[1], tta=False,
                                                                         scales=(1.0,)))


def test_no_scale_and_disagreeing_ensemble_members_are_errors():
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at least one test-time scale"):
        predict_probs(_Columns(), images, {"arch": "deeplabv3"}, scales=())

    class _Three(torch.nn.Module):
        def forward(self, x):
            return {"out": torch.zeros(x.shape[0], 3, x.shape[-2], x.shape[-1])}

    with pytest.raises(ValueError, match="disagree on the number of classes: 3 vs 2"):
        predict_ensemble([(_Columns(), {"arch": "deeplabv3"}), (_Three(), {"arch": "deeplabv3"})], images)


class _Conv(torch.nn.Module):
    """A small seeded convolution: its output depends on position, colour channel and scale, so every view differs."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x) * 3.0}


def test_tta_averages_the_softmax_of_every_scale_and_its_mirror_and_an_ensemble_averages_its_members():
    from utils.transforms import normalize

    images = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    config, scales = {"arch": "deeplabv3"}, (0.5, 1.0)
    x = normalize(images)
    views = []
    with torch.no_grad():
        for scale in scales:
            size = (max(1, int(8 * scale + 0.5)), max(1, int(12 * scale + 0.5)))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
            for flip in (False, True):
                probs = _Conv(0)(xs.flip(3) if flip else xs)["out"].softmax(1)
                probs = probs.flip(3) if flip else probs
                views.append(F.interpolate(probs, size=(8, 12), mode="bilinear", align_corners=False))
    expected = torch.stack(views).mean(0)
    assert not torch.allclose(views[0], views[1]) and not torch.allclose(views[0], views[2])  # the views differ
    torch.testing.assert_close(predict_probs(_Conv(0), images, config, tta=True, scales=scales), expected)
    # an ensemble is the mean of its members' TTA probabilities
    members = [(_Conv(0), config), (_Conv(1), config)]
    mean = (predict_probs(_Conv(0), images, config, None, True, scales) +
            predict_probs(_Conv(1), images, config, None, True, scales)) / 2
    torch.testing.assert_close(predict_ensemble(members, images, tta=True, scales=scales), mean)
    # with an autocast dtype the members run in it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _Conv(0)(x)["out"].float().softmax(1)
    assert not torch.allclose(low, predict_probs(_Conv(0), images, config))  # bf16 is seen
    torch.testing.assert_close(predict_ensemble(members[:1], images, torch.bfloat16), low)
