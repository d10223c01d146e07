"""Theorem 2 (eq. 18): the paper's statements about the dimension constraint."""

import pytest

from lhvjax import bound, cli


def test_both_sides_of_eq_18():
    assert [bound.b_qm(2, N) for N in (1, 2, 3)] == [3, 15, 63]
    assert [bound.b_lhv(2, N) for N in (1, 2, 3)] == [3, 10, 21]
    assert bound.b_qm(3, 2) == 80 and bound.b_lhv(20, 6) == 7260
    assert bound.b_noninteracting(2, 5) == 15 and bound.b_noninteracting(3, 2) == 16
    # exact integers well beyond int64
    assert bound.b_qm(2, 40) == 2**80 - 1


def test_bell_model_allows_one_qubit_only():
    # D = 2, d = dim S^2 = 2: 3 <= 3 for N = 1, 15 > 10 for N = 2
    assert bound.largest_n(2, 2) == 1
    assert bound.allowed(2, 2, 1) and not bound.allowed(2, 2, 2)
    # noninteracting dynamics needs only N (D^2 - 1): allowed for every N (Theorem 1)
    assert all(r["noninteracting_allowed"] for r in bound.table(2, 2, 20))


def test_d20_allows_six_qubits_or_three_qutrits():
    assert bound.largest_n(2, 20) == 6
    assert bound.largest_n(3, 20) == 3


def test_two_qubits_need_d_at_least_3():
    assert bound.min_d(2, 2) == 3
    assert not bound.allowed(2, 2, 2) and bound.allowed(2, 3, 2)


def test_allowed_set_is_an_initial_segment():
    for D in (2, 3, 4):
        for d in range(1, 40):
            n = bound.largest_n(D, d)
            ok = [bound.allowed(D, d, N) for N in range(1, 15)]
            assert ok == [N <= n for N in range(1, 15)], (D, d)


def test_table_rows_and_errors():
    rows = bound.table(2, 2, 4)
    assert [r["N"] for r in rows] == [1, 2, 3, 4]
    assert [r["allowed"] for r in rows] == [True, False, False, False]
    with pytest.raises(ValueError, match="D must be"):
        bound.table(1, 2)
    with pytest.raises(ValueError, match="d must be"):
        bound.largest_n(2, 0)


def test_cli_bound_prints_table_and_largest_n(capsys, tmp_path):
    assert cli.main(["bound", "--D", "2", "--d", "2"]) == 0
    out = capsys.readouterr().out
    assert "largest N: 1" in out and "1048575" in out  # N = 10 row of B_QM
    png = tmp_path / "bound.png"
    assert cli.main(["bound", "--D", "3", "--d", "20", "--nmax", "5", "--plot", str(png)]) == 0
    assert "largest N: 3" in capsys.readouterr().out
    assert png.stat().st_size > 1000
    assert cli.main(["bound", "--D", "1"]) == 2
