import numpy as np
import pytest

from lowdose.physics.defects import group_columns
from lowdose.physics.structures import PARTICLE_CLASSES, StructureParams, build_model, cell_size_A
from lowdose.physics.wulff import PT_A, wulff_particle


def _pt(model):
    return model.positions[model.symbols == "Pt"]


def test_same_params_same_model_and_seed_matters():
    p = StructureParams(particle="PtNp2", defect="D2", support_surface="stepped", seed=5)
    a, b = build_model(p), build_model(p)
    assert np.array_equal(a.positions, b.positions)
    assert a.columns.equals(b.columns)
    c = build_model(StructureParams(particle="PtNp2", defect="D2", support_surface="stepped", seed=6))
    assert not np.array_equal(_pt(a), _pt(c))


def test_particle_classes_are_distinct_sizes():
    sizes = [len(wulff_particle(shape)) for shape in PARTICLE_CLASSES.values()]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_particle_sits_on_support():
    m = build_model(StructureParams(particle="PtNp3", seed=1))
    pt, sup = _pt(m), m.positions[m.symbols != "Pt"]
    gap = sup[:, 1].min() - pt[:, 1].max()  # y grows down the image
    assert 1.5 < gap < 3.0
    assert 0 <= pt[:, 0].min() and pt[:, 0].max() < m.cell_A[0]


@pytest.mark.parametrize(("defect", "delta"), [("D1", -1), ("D2", -2), ("Ds", None), ("Dh", None)])
def test_defects_change_the_surface_as_defined(defect, delta):
    base = build_model(StructureParams(particle="PtNp2", defect="D0", seed=3))
    m = build_model(StructureParams(particle="PtNp2", defect=defect, seed=3))
    n0, n1 = len(_pt(base)), len(_pt(m))
    cols0 = base.columns[base.columns.element == "Pt"]
    cols1 = m.columns[m.columns.element == "Pt"]
    if delta is not None:
        assert n1 - n0 == delta
        changed = cols0.n_atoms.sum() - cols1.n_atoms.sum()
        assert changed == -delta
    if defect == "Ds":
        assert 1 <= n1 - n0 <= 3
        assert len(cols1) == len(cols0) + 1
    if defect == "Dh":
        assert len(cols1) == len(cols0)
        assert (cols1.n_atoms == 1).sum() == (cols0.n_atoms == 1).sum() + 1


def test_ground_truth_columns_count_every_atom_and_flag_pt_surface():
    m = build_model(StructureParams(particle="PtNp2", seed=0))
    assert m.columns.n_atoms.sum() == len(m.positions)
    assert set(m.columns.element) == {"Pt", "Ce", "O"}
    assert m.columns[m.columns.surface].element.eq("Pt").all()
    pt = m.columns[m.columns.element == "Pt"]
    assert 0 < pt.surface.sum() < len(pt)
    # projected Pt columns in [110]: nearest neighbours at a*sqrt(3)/(2*sqrt(2)) = 2.40 A
    xy = pt[["x_A", "y_A"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    d[d == 0] = np.inf
    assert np.allclose(d.min(axis=1), PT_A * np.sqrt(3) / (2 * np.sqrt(2)), atol=0.01)


def test_stepped_support_and_thickness():
    flat = build_model(StructureParams(support_surface="faceted", seed=2))
    step = build_model(StructureParams(support_surface="stepped", seed=2))
    thick = build_model(StructureParams(support_thickness_nm=6.0, seed=2))
    n = lambda m: int((m.symbols != "Pt").sum())  # noqa: E731
    assert n(step) < n(flat) < n(thick)
    assert thick.cell_A[2] == pytest.approx(64.0)
    assert flat.cell_A[0] == pytest.approx(cell_size_A(5.0)) and 48 < flat.cell_A[0] < 56


def test_tilt_moves_projected_columns_but_not_atom_counts():
    flat = build_model(StructureParams(seed=4))
    tilted = build_model(StructureParams(seed=4, tilt_x_deg=3.0))
    assert np.array_equal(flat.columns.n_atoms, tilted.columns.n_atoms)
    # rotation about x smears each column along y by ~ its length * sin(tilt)
    assert np.ptp(tilted.positions[:, 1] - flat.positions[:, 1]) > 1.0
    assert np.ptp(tilted.positions[:, 0] - flat.positions[:, 0]) < 1e-9
    centres, _, _ = group_columns(tilted.positions)
    assert len(centres) > len(tilted.columns)  # atoms no longer line up along z
