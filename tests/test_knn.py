"""utils/knn.py: weighted cosine k-NN on hand-placed neighbours, where k and the temperature decide the answer; and
p1_ssl_pretrain.py's k-NN monitor built on it (extract_features, knn_accuracy)."""
import math

import pytest
import torch

from p1_ssl_pretrain import extract_features, knn_accuracy
from utils.knn import knn_classify
from utils.transforms import normalize


ANGLE = 0.5  # the whole picture is rotated by this (radians): cosines stay, no coordinate is special


def _rotated(points):
    c, s = math.cos(ANGLE), math.sin(ANGLE)
    return points @ torch.tensor([[c, s], [-s, c]], dtype=points.dtype)


def _at(similarities, scale=1.0):
    """2-d points whose cosine similarity with QUERY is each of ``similarities`` (norm ``scale``: the k-NN must
    not care)."""
    s = torch.tensor(similarities, dtype=torch.float64)
    return _rotated(torch.stack([s, (1 - s ** 2).sqrt()], 1) * scale)


QUERY = _rotated(torch.tensor([[2.0, 0.0]], dtype=torch.float64))
# nearest first: one class-0 point at similarity 1.0, two class-1 points at 0.98, then far class-2 points
TRAIN = _at([0.98, 1.0, 0.2, 0.98, 0.1, 0.1], scale=3.0)
LABELS = torch.tensor([1, 0, 2, 1, 2, 2])


def _predict(k, temperature):
    return int(knn_classify(TRAIN, LABELS, QUERY, 3, k=k, temperature=temperature)[0])


def test_k_decides_the_vote():
    # k=1 and k=2: the single nearest class-0 point wins (its weight is the largest)
    assert _predict(1, 0.07) == 0 and _predict(2, 0.07) == 0
    # k=3: the two class-1 points together outweigh it at T=0.07: 2 exp(0.98/T) > exp(1/T)
    assert 2 * math.exp(0.98 / 0.07) > math.exp(1.0 / 0.07)
    assert _predict(3, 0.07) == 1
    # k=6: three class-2 votes at low similarity cannot beat them
    assert _predict(6, 0.07) == 1
    # k beyond the training set is clipped to it
    assert _predict(50, 0.07) == 1


def test_temperature_decides_the_vote():
    # a sharper temperature lets the nearest point outvote the two slightly farther ones: exp(-0.02/T) < 1/2
    assert 2 * math.exp(-0.02 / 0.01) < 1
    assert _predict(3, 0.01) == 0 and _predict(3, 0.07) == 1 and _predict(3, 1.0) == 1


def test_votes_are_exp_similarity_over_temperature():
    # class 0: one point at similarity 1.0; class 1: two at 0.95. exp(1/T) vs 2 exp(0.95/T): equal at T = 0.05/ln 2
    train, labels = _at([1.0, 0.95, 0.95]), torch.tensor([0, 1, 1])
    tie = 0.05 / math.log(2)
    assert int(knn_classify(train, labels, QUERY, 2, k=3, temperature=tie * 0.98)[0]) == 0
    assert int(knn_classify(train, labels, QUERY, 2, k=3, temperature=tie * 1.02)[0]) == 1


def test_unweighted_votes_count_neighbours_and_similarity_breaks_ties():
    # temperature None: one vote per neighbour, whatever the similarities (two distant votes beat a close one)
    for far in (0.3, -0.5):
        train, labels = _at([1.0, far, far]), torch.tensor([0, 1, 1])
        assert int(knn_classify(train, labels, QUERY, 2, k=3, temperature=None)[0]) == 1
    # one neighbour each: the more similar one wins, whichever label comes first
    for labels in (torch.tensor([0, 1]), torch.tensor([1, 0])):
        pred = knn_classify(_at([0.6, 0.9]), labels, QUERY, 2, k=2, temperature=None)
        assert int(pred[0]) == int(labels[1])


def test_chunks_and_leave_one_out():
    torch.manual_seed(0)
    train = torch.randn(7, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    queries = torch.randn(5, 4)
    whole = knn_classify(train, labels, queries, 3, k=3)
    assert torch.equal(knn_classify(train, labels, queries, 3, k=3, chunk=2), whole)
    # with leave_one_out each training point is classified by the others only: with k=1, by its nearest other
    # point, in every chunk
    sim = torch.nn.functional.normalize(train, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    sim.fill_diagonal_(-2.0)
    expected = labels[sim.argmax(1)]
    for chunk in (7, 3, 1):
        assert torch.equal(knn_classify(train, labels, train, 3, k=1, chunk=chunk, leave_one_out=True), expected)
    # without it, a point is its own nearest neighbour
    assert torch.equal(knn_classify(train, labels, train, 3, k=1), labels)
    # k beyond the others is clipped to N - 1: the point itself never votes, also in one-vote-each mode
    for temperature in (0.07, None):
        assert torch.equal(knn_classify(train, labels, train, 3, k=50, temperature=temperature, leave_one_out=True),
                           knn_classify(train, labels, train, 3, k=6, temperature=temperature, leave_one_out=True))
    # ... and all N - 1 others vote, by hand: one vote each plus summed similarity / 2k (k = 6), or exp(sim / T)
    others = sim > -2
    counted = torch.zeros(7, 3).index_add_(1, labels, others * (1.0 + sim / 12.0))
    weighted = torch.zeros(7, 3).index_add_(1, labels, others * (sim / 1.0).exp())
    nearest5 = torch.zeros(7, 3).index_add_(1, labels, (sim >= sim.topk(5, 1).values[:, -1:]) * (1.0 + sim / 10.0))
    assert not torch.equal(counted.argmax(1), nearest5.argmax(1))  # the data tells N - 1 voters from N - 2
    assert torch.equal(knn_classify(train, labels, train, 3, k=50, temperature=None, leave_one_out=True),
                       counted.argmax(1))
    assert torch.equal(knn_classify(train, labels, train, 3, k=50, temperature=1.0, leave_one_out=True),
                       weighted.argmax(1))


def test_float64_features_are_compared_in_float64():
    # two neighbours whose similarities differ by ~1e-12: equal in float32 (a tie, won by the lower class), not in
    # float64, where the nearer one (class 1) wins
    train = _rotated(torch.tensor([[1.0, 2e-6], [1.0, 1e-6]], dtype=torch.float64))
    pred = knn_classify(train, torch.tensor([0, 1]), QUERY, 2, k=2)
    assert int(pred[0]) == 1
    assert int(knn_classify(train.float(), torch.tensor([0, 1]), QUERY.float(), 2, k=2)[0]) == 0


def test_low_precision_features_are_compared_in_float32_and_any_integer_labels_vote():
    # bf16-exact features whose similarities to the query (0.99988, 0.99997) are one value in bf16 (a tie, won by
    # the lower class) but not in float32, where the nearer one (class 1) wins
    train = torch.tensor([[1.0, 2.0 ** -6], [1.0, 2.0 ** -7]])
    query = torch.tensor([[1.0, 0.0]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for labels in (torch.tensor([0, 1]), torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0, 1]).byte()):
            pred = knn_classify(train.to(dtype), labels, query.to(dtype), 2, k=2)
            assert pred.tolist() == [1], (dtype, labels.dtype)
    tied = torch.nn.functional.normalize(train.bfloat16(), dim=1) @ query.bfloat16().T
    assert tied[0] == tied[1]  # what bf16 arithmetic would have decided


def test_defaults_are_k20_and_t007():
    torch.manual_seed(0)
    train, labels, queries = torch.randn(300, 6), torch.randint(0, 5, (300,)), torch.randn(200, 6)
    dino = knn_classify(train, labels, queries, 5, k=20, temperature=0.07)
    # this data tells those values apart from their neighbours
    assert not torch.equal(dino, knn_classify(train, labels, queries, 5, k=21, temperature=0.07))
    assert not torch.equal(dino, knn_classify(train, labels, queries, 5, k=20, temperature=0.1))
    assert torch.equal(knn_classify(train, labels, queries, 5), dino)
    assert knn_accuracy(train, labels, queries, dino, 5) == 1.0


def test_knn_accuracy_passes_k_and_temperature_through():
    labels = torch.tensor([0])
    assert knn_accuracy(TRAIN, LABELS, QUERY, labels, 3, k=2, temperature=0.07) == 1.0
    assert knn_accuracy(TRAIN, LABELS, QUERY, labels, 3, k=3, temperature=0.07) == 0.0
    assert knn_accuracy(TRAIN, LABELS, QUERY, labels, 3, k=3, temperature=0.01) == 1.0
    # the defaults are DINO's k=20, T=0.07: here all 6 points vote, the two class-1 points win
    assert knn_accuracy(TRAIN, LABELS, QUERY, torch.tensor([1]), 3) == 1.0
    assert knn_accuracy(TRAIN, LABELS, torch.cat([QUERY, QUERY]), torch.tensor([1, 0]), 3) == 0.5


def test_extract_features_runs_in_eval_mode_on_normalised_images():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9), torch.nn.Linear(12, 5)).train()
    images = torch.randint(0, 256, (6, 3, 2, 2), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(list(zip(images, range(6))), batch_size=4)
    feats, labels = extract_features(model, loader, torch.device("cpu"))
    assert model.training  # the caller's mode is restored
    assert feats.dtype == torch.float32 and feats.shape == (6, 5)
    assert torch.equal(labels, torch.arange(6))
    with torch.no_grad():
        torch.testing.assert_close(feats, model.eval()(normalize(images)))  # eval: no dropout
    model.eval()
    extract_features(model, loader, torch.device("cpu"))
    assert not model.training
    # with an autocast dtype the forward runs in it, on the loader's device
    feats16, _ = extract_features(model, loader, torch.device("cpu"), amp_dtype=torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(normalize(images)).float()
    assert feats16.dtype == torch.float32 and torch.equal(feats16, expected) and not torch.equal(feats16, feats)
