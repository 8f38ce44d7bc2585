"""petalnet.schedules beyond test_train.py's check of whole epochs through ``optim.lr_schedule``: fractional
epochs, a sustain phase, the cosine's shape, ``constant`` and ``curve``."""
import math

import pytest

from petalnet.schedules import Schedule

# The competition tutorial's constants (8 TPU replicas)
LR_START, LR_MAX, LR_MIN = 0.00001, 0.00005 * 8, 0.00001
LR_RAMPUP_EPOCHS, LR_EXP_DECAY = 5, .8


def lrfn(epoch, sustain):
    """The tutorial's ``lrfn`` as written there (LR_SUSTAIN_EPOCHS a parameter here)."""
    if epoch < LR_RAMPUP_EPOCHS:
        lr = (LR_MAX - LR_START) / LR_RAMPUP_EPOCHS * epoch + LR_START
    elif epoch < LR_RAMPUP_EPOCHS + sustain:
        lr = LR_MAX
    else:
        lr = (LR_MAX - LR_MIN) * LR_EXP_DECAY**(epoch - LR_RAMPUP_EPOCHS - sustain) + LR_MIN
    return lr


def competition(sustain=0, epochs=12):
    return Schedule("competition", LR_MAX, epochs, start=LR_START, min_lr=LR_MIN, rampup_epochs=LR_RAMPUP_EPOCHS,
                    sustain_epochs=sustain, decay=LR_EXP_DECAY)


@pytest.mark.parametrize("sustain", [0, 2, 3.5])
def test_competition_matches_the_tutorial_at_fractional_epochs(sustain):
    s = competition(sustain)
    for epoch in (0, 0.25, 2.5, 4.999, 5, 5.5, 6.75, 7, 8.5, 11, 11.96, 12):
        assert s(epoch) == pytest.approx(lrfn(epoch, sustain), rel=1e-12), epoch


def test_competition_known_values():
    s = competition(sustain=2)
    assert s(0) == pytest.approx(1e-5)
    assert s(2.5) == pytest.approx(2.05e-4)              # halfway up the ramp: (4e-4 + 1e-5) / 2
    assert s(5) == s(6.9) == pytest.approx(4e-4)         # sustained at the peak
    assert s(8) == pytest.approx(3.22e-4)                # one epoch of decay: 3.9e-4 x 0.8 + 1e-5
    assert s(10) == pytest.approx(3.9e-4 * 0.512 + 1e-5)  # three epochs: 0.8 ** 3
    assert s(7 + 100) == pytest.approx(1e-5, rel=1e-6)   # decays onto LR_MIN, never below


def test_competition_shape_up_flat_down():
    s = competition(sustain=2)
    xs = [i / 20 for i in range(0, 12 * 20 + 1)]
    lrs = [s(x) for x in xs]
    ramp = [lr for x, lr in zip(xs, lrs) if x < 5]
    flat = [lr for x, lr in zip(xs, lrs) if 5 <= x < 7]
    decay = [lr for x, lr in zip(xs, lrs) if x >= 7]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    assert set(flat) == {LR_MAX}
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert max(lrs) == LR_MAX and min(lrs) >= LR_MIN
    assert ramp[-1] < LR_MAX and s(5) == LR_MAX   # the peak is reached at the ramp's end, not before


def test_cosine_warms_up_linearly_then_falls_to_min_lr():
    peak, low, start = 3e-3, 1e-6, 1e-4
    s = Schedule("cosine", peak, 20, start=start, min_lr=low, rampup_epochs=2)
    assert s(0) == pytest.approx(start) and s(1) == pytest.approx((start + peak) / 2) and s(0.5) == pytest.approx(
        start + (peak - start) / 4)
    assert s(2) == pytest.approx(peak)
    # a quarter of the way down: min + (peak - min) * (1 + cos(pi / 4)) / 2
    assert s(2 + 18 / 4) == pytest.approx(low + (peak - low) * (1 + math.cos(math.pi / 4)) / 2)
    assert s(20) == pytest.approx(low) and s(25) == pytest.approx(low)   # held at min_lr past the end
    xs = [i / 10 for i in range(0, 201)]
    lrs = [s(x) for x in xs]
    up = [lr for x, lr in zip(xs, lrs) if x <= 2]
    down = [lr for x, lr in zip(xs, lrs) if x >= 2]
    assert all(a < b for a, b in zip(up, up[1:])) and all(a > b for a, b in zip(down, down[1:]))
    assert max(lrs) == pytest.approx(peak) and lrs.index(max(lrs)) == xs.index(2)


def test_cosine_without_warm_up_starts_at_the_peak():
    s = Schedule("cosine", 1e-3, 4, min_lr=0.0, rampup_epochs=0)
    assert s(0) == 1e-3 and s(2) == pytest.approx(5e-4) and s(4) == pytest.approx(0.0, abs=1e-15)


def test_constant_is_the_peak_everywhere():
    s = Schedule("constant", 2e-4, 5, start=1e-6, min_lr=1e-7, rampup_epochs=3)
    assert {s(x) for x in (0, 0.5, 3, 4.9, 5, 9)} == {2e-4}


def test_curve_has_every_step_of_the_run():
    s = Schedule("cosine", 1e-3, 3, rampup_epochs=1)
    xs, lrs = s.curve(4)
    assert len(xs) == len(lrs) == 3 * 4 + 1
    assert xs[0] == 0 and xs[-1] == 3 and xs[5] == 1.25
    assert lrs == [s(x) for x in xs] and lrs[4] == pytest.approx(1e-3)
