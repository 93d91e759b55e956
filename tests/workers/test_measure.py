import pytest

from workers.measure import _percentile, macro_f1


def test_macro_f1_by_hand():
    gold = [0, 0, 1, 1, 2]
    predicted = [0, 1, 1, 1, 0]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(gold, predicted, [0, 1, 2]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_percentile_interpolates_like_numpy():
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 0.5) == pytest.approx(50.5)
    assert _percentile(values, 0.95) == pytest.approx(95.05)
    assert _percentile([7.0], 0.99) == 7.0
