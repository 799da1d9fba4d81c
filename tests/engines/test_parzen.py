"""hpsearch.engines.parzen: TPE's mixture log-density in fewer passes equals Optuna's."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from optuna.samplers._tpe.probability_distributions import (
    _BatchedCategoricalDistributions,
    _BatchedDiscreteTruncLogNormDistributions,
    _BatchedDiscreteTruncNormDistributions,
    _BatchedTruncLogNormDistributions,
    _BatchedTruncNormDistributions,
    _MixtureOfProductDistribution,
)

from hpsearch.engines.packsampling import _vectorised_truncnorm
from hpsearch.engines.parzen import distinct_values, kernel_log_pdf, mixture_log_pdf


def _kernels(rng: np.random.Generator, kind: int, k: int, n: int, case: int) -> tuple[Any, np.ndarray]:
    """One parameter's k kernels of type ``kind`` and n candidate values (some outside a continuous range)."""
    if kind == 0:
        c = int(rng.integers(2, 5))
        w = rng.random((k, c)) + 0.01
        if case % 5 == 0:
            w[:, 0] = 0.0  # a choice no kernel gives weight: log 0
        cats = _BatchedCategoricalDistributions(weights=w / w.sum(1, keepdims=True))
        return cats, rng.integers(0, c, n).astype(float)
    if kind == 1:
        mu, sigma = rng.uniform(-1, 3, k), rng.uniform(0.01, 2, k)
        return _BatchedTruncNormDistributions(mu=mu, sigma=sigma, low=-1.0, high=3.0), rng.uniform(-1.2, 3.2, n)
    if kind == 2:
        lo, hi = np.log(1e-3), np.log(1e-1)
        return (_BatchedTruncLogNormDistributions(mu=rng.uniform(lo, hi, k), sigma=rng.uniform(0.05, 3, k), low=1e-3,
                                                  high=0.1), np.exp(rng.uniform(lo - 0.2, hi + 0.2, n)))
    if kind == 3:  # few distinct kernels: the discrete path groups them
        mu, sigma = rng.integers(1, 30, k).astype(float), rng.choice([0.5, 2.0, 7.0], k)
        return (_BatchedDiscreteTruncNormDistributions(mu=mu, sigma=sigma, low=1.0, high=29.0, step=1.0),
                rng.integers(1, 30, n).astype(float))
    mu = np.log(rng.integers(1, 100, k).astype(float))
    sigma = rng.uniform(0.1, 2, k)
    return (_BatchedDiscreteTruncLogNormDistributions(mu=mu, sigma=sigma, low=1.0, high=99.0, step=1.0),
            rng.integers(1, 100, n).astype(float))


@pytest.mark.parametrize("vectorised", [False, True], ids=["optuna-truncnorm", "scipy-truncnorm"])
def test_mixture_log_pdf_is_optunas_on_every_kernel_type(vectorised: bool) -> None:
    """200 seeded mixtures of 1-4 parameters of every kernel type (categorical with a zero weight,
    truncated normal and log-normal with candidates outside the range, discrete normal and log-normal),
    1-60 kernels, 1-80 candidates: the same densities as Optuna's log_pdf (the same -inf where a
    candidate has none), with Optuna's truncated normal and with the sampler's SciPy one."""
    rng = np.random.default_rng(0)
    with np.errstate(divide="ignore"), (_vectorised_truncnorm() if vectorised else contextlib.nullcontext()):
        for case in range(200):
            k, n = int(rng.integers(1, 60)), int(rng.integers(1, 80))
            parts = [_kernels(rng, int(kind), k, n, case) for kind in rng.choice(5, size=int(rng.integers(1, 5)))]
            w = rng.random(k) + 0.01
            mix = _MixtureOfProductDistribution(weights=w / w.sum(), distributions=[d for d, _ in parts])
            x = np.array([col for _, col in parts]).T
            want, got = mix.log_pdf(x), mixture_log_pdf(mix, x)
            assert np.array_equal(np.isneginf(want), np.isneginf(got)), case
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12, err_msg=f"case {case}")



@pytest.mark.parametrize("vectorised", [False, True], ids=["optuna-truncnorm", "scipy-truncnorm"])
def test_one_kernels_log_pdf_is_optunas_on_every_kernel_type(vectorised: bool) -> None:
    """A liar's density (one kernel): 300 seeded kernels of 1-4 parameters of every type, scored on
    the last rows of a batch of candidates whose distinct values were found once for the whole batch:
    Optuna's log_pdf on those rows (the same -inf outside a range or on a zero-weight choice)."""
    rng = np.random.default_rng(1)
    with np.errstate(divide="ignore"), (_vectorised_truncnorm() if vectorised else contextlib.nullcontext()):
        for case in range(300):
            n = int(rng.integers(1, 80))
            parts = [_kernels(rng, int(kind), 1, n, case) for kind in rng.choice(5, size=int(rng.integers(1, 5)))]
            kern = _MixtureOfProductDistribution(weights=np.array([1.0]), distributions=[d for d, _ in parts])
            batch = np.array([col for _, col in parts]).T
            rest = int(rng.integers(0, n))  # the rows not used yet: the batch's last n - rest
            x = batch[rest:]
            want, got = kern.log_pdf(x), kernel_log_pdf(kern, x, distinct_values(kern, batch))
            assert np.array_equal(np.isneginf(want), np.isneginf(got)), case
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12, err_msg=f"case {case}")


def test_terms_far_below_the_largest_count_as_optunas_do() -> None:
    """Kernels whose terms are e^-20 .. e^-40 below the largest (where double precision still sees
    them in a sum of 60) change the density as in Optuna's log_pdf: the floor under which the
    exponent is cut only drops terms that cannot change the sum."""
    sigma = np.full(60, 0.1)
    mu = np.concatenate([[0.0], np.sqrt(2 * np.linspace(20, 40, 59)) * 0.1])  # -0.5 z^2 from -20 to -40
    mix = _MixtureOfProductDistribution(weights=np.full(60, 1 / 60), distributions=[
        _BatchedTruncNormDistributions(mu=mu, sigma=sigma, low=-5.0, high=5.0)])
    x = np.array([[0.0], [-0.01], [0.02]])
    np.testing.assert_allclose(mixture_log_pdf(mix, x), mix.log_pdf(x), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("vectorised", [False, True], ids=["optuna-truncnorm", "scipy-truncnorm"])
def test_log_gauss_mass_is_optunas_bit_for_bit(vectorised: bool) -> None:
    """The float-array Gaussian mass equals Optuna's complex-array one exactly, in each of its cases
    (left of 0, right of 0, across it), with Optuna's and with the sampler's SciPy functions."""
    from optuna.samplers._tpe import _truncnorm

    from hpsearch.engines.parzen import log_gauss_mass

    rng = np.random.default_rng(2)
    a = rng.normal(0, 4, 5000)
    b = a + rng.exponential(1.5, 5000)
    with _vectorised_truncnorm() if vectorised else contextlib.nullcontext():
        assert np.array_equal(log_gauss_mass(a, b), _truncnorm._log_gauss_mass(a, b), equal_nan=True)
        assert np.array_equal(log_gauss_mass(a[:1], b[:1]), _truncnorm._log_gauss_mass(a[:1], b[:1]))
