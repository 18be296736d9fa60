import itertools

import numpy as np

from lowdose.physics.dynamics import drift_path, dwell_schedule, render_frame, surface_configurations
from lowdose.physics.structures import PARTICLE_CLASSES
from lowdose.physics.wulff import wulff_particle


def test_configurations_are_distinct_single_events():
    base = wulff_particle(PARTICLE_CLASSES["PtNp1"])
    rng = np.random.default_rng(3)
    states = surface_configurations(base, 10, rng)
    assert len(states) == 10 and states[0].event == "start"
    assert {s.event for s in states[1:]} <= {"appear", "hop", "vanish"}
    assert "appear" in {s.event for s in states}
    for prev, cur in itertools.pairwise(states):
        assert abs(len(cur.particle) - len(prev.particle)) <= 3
        assert not (len(cur.particle) == len(prev.particle) and np.array_equal(cur.particle, prev.particle))
    again = surface_configurations(base, 10, np.random.default_rng(3))
    assert all(np.array_equal(a.particle, b.particle) for a, b in zip(states, again, strict=True))


def test_dwell_schedule_uses_every_state_in_order():
    s = dwell_schedule(100, 7, np.random.default_rng(0))
    assert s[0] == 0 and s[-1] == 6
    assert set(np.unique(s)) == set(range(7)) and np.all(np.diff(s) >= 0)
    assert np.array_equal(dwell_schedule(3, 10, np.random.default_rng(0)), [0, 1, 2])


def test_drift_is_slow_and_render_frame_shifts_subpixel():
    d = drift_path(400, 40.0, (0.6, -0.9), np.random.default_rng(1))
    assert np.all(d[0] == 0) and np.abs(np.diff(d, axis=0)).max() < 0.5
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.exp(-((yy - 30.0) ** 2 + (xx - 20.0) ** 2) / 8.0)
    frame = render_frame(image, (10.5, 5.25), 32)
    iy, ix = np.unravel_index(np.argmax(frame), frame.shape)
    assert (iy, ix) in {(19, 15), (20, 15), (19, 14), (20, 14)}
    com_y = (frame * np.arange(32)[:, None]).sum() / frame.sum()
    assert abs(com_y - 19.5) < 0.05
