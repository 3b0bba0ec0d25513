"""Rate-coded scikit-learn digits: the fixed stratified split and the Bernoulli rate code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from spikegate.datasets import DigitsData, digits_split, load_digits_split, rate_code


@pytest.fixture(scope="module")
def sklearn_digits():
    return load_digits()


def test_split_is_disjoint_complete_stratified_and_fixed(sklearn_digits):
    train, test = digits_split("train"), digits_split("test")
    assert len(train) + len(test) == 1797
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    labels = sklearn_digits.target
    for label in range(10):
        n_class = np.sum(labels == label)
        n_test = np.sum(labels[test] == label)
        assert abs(n_test - 0.2 * n_class) <= 0.5, label
    # pinned: a change of split would make old results incomparable
    assert (len(train), len(test)) == (1438, 359)
    assert test[:8].tolist() == [5, 9, 12, 14, 16, 17, 19, 23]
    assert int(test.sum()) == 324981


def test_load_digits_split_returns_the_indexed_images(sklearn_digits):
    images, labels, indices = load_digits_split("test")
    np.testing.assert_array_equal(images, sklearn_digits.images[indices])
    np.testing.assert_array_equal(labels, sklearn_digits.target[indices])
    assert images.dtype == np.uint8 and images.max() == 16


def test_rate_code_fires_at_intensity_over_16():
    data = DigitsData(time_steps=64, seed=0)
    images, _, _ = load_digits_split("train")
    rates = data.train.frames.float().mean(dim=1)[:, 0].numpy()  # [N, 8, 8]
    for level in range(17):
        mask = images == level
        if mask.sum() < 50:
            continue
        p = level / 16
        n = mask.sum() * 64
        assert abs(rates[mask].mean() - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9, level
    assert rates[images == 0].max() == 0
    assert rates[images == 16].min() == 1


def test_rate_code_is_bernoulli_independent_over_time():
    intensity = torch.full((2000, 1), 0.3)
    spikes = rate_code(intensity, 8, torch.Generator().manual_seed(1)).float()
    assert spikes.shape == (2000, 8, 1) and spikes.dtype == torch.float32
    # consecutive steps are uncorrelated: P(s_t = s_t+1 = 1) ~ p^2
    both = (spikes[:, 1:] * spikes[:, :-1]).mean().item()
    assert abs(both - 0.09) < 0.01
    with pytest.raises(ValueError, match="intensity"):
        rate_code(torch.full((2, 1), 1.5), 4, torch.Generator())


def test_digits_data_shapes_labels_and_loader(sklearn_digits):
    data = DigitsData(time_steps=5, seed=0)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10 and data.time_steps == 5
    assert len(data.train) == 1438 and len(data.test) == 359
    x, label = data.test[0]
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(
        data.test.labels.numpy(), sklearn_digits.target[digits_split("test")]
    )
    assert label == sklearn_digits.target[digits_split("test")[0]]
    xb, yb = next(iter(DataLoader(data.train, batch_size=7)))
    assert xb.shape == (7, 5, 1, 8, 8) and yb.shape == (7,) and yb.dtype == torch.int64


def test_digits_data_is_deterministic_per_seed():
    a, b, c = DigitsData(4, seed=3), DigitsData(4, seed=3), DigitsData(4, seed=4)
    assert torch.equal(a.train.frames, b.train.frames)
    assert not torch.equal(a.train.frames, c.train.frames)


@pytest.mark.parametrize("time_steps, error", [(0, ValueError), (-3, ValueError),
                                               (2.0, TypeError), (True, TypeError)])
def test_bad_time_steps_named(time_steps, error):
    with pytest.raises(error, match="time_steps: expected an int >= 1"):
        DigitsData(time_steps=time_steps)


def test_bad_split_and_seed_named():
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'test'\], got 'val'"):
        digits_split("val")
    with pytest.raises(ValueError, match="seed"):
        DigitsData(seed=-1)


def test_hydra_instantiates_digits_data():
    hydra_utils = pytest.importorskip("hydra.utils")
    data = hydra_utils.instantiate(
        {"_target_": "spikegate.datasets.DigitsData", "time_steps": 3, "seed": 1}
    )
    assert isinstance(data, DigitsData) and data.train[0][0].shape == (3, 1, 8, 8)
