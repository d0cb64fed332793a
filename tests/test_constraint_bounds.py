"""A value at a constraint's bound, up to its dtype's rounding, is accepted and maps to a finite raw value."""

import pytest
import torch

import torchgp
from torchgp.constraints import GreaterThan, Interval, LessThan, Positive
from torchgp.errors import InputError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_at_the_default_lower_bound(dtype):
    lik = torchgp.likelihoods.GaussianLikelihood().to(dtype)
    lik.initialize(noise=1e-4)  # float32 rounds 1e-4 to 9.99999975e-05, below the float64 bound
    assert torch.isfinite(lik.raw_noise).all()
    assert abs(float(lik.noise) - 1e-4) <= 4 * torch.finfo(dtype).eps * 1e-4
    lik.noise = torch.tensor(1e-4, dtype=dtype)  # the setter takes the same path
    assert torch.isfinite(lik.raw_noise).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_beyond_rounding_are_still_refused(dtype):
    lik = torchgp.likelihoods.GaussianLikelihood().to(dtype)
    for bad in (0.999e-4, 0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="noise must be"):
            lik.initialize(noise=bad)
    assert not Positive().check(torch.tensor(0.0, dtype=dtype))  # a bound the dtype holds exactly is outside
    assert not Interval(-2.0, 3.0).check(torch.tensor(3.0, dtype=dtype))
    assert Interval(0.1, 0.7).check(torch.tensor(0.1, dtype=torch.float32))  # 0.1 is no float32: its rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "constraint, at, inside",
    [
        (GreaterThan(1e-4), 1e-4, 1.5e-4),
        (LessThan(2.5), 2.5, 2.0),
        (Interval(0.1, 0.7), 0.1, 0.2),
        (Interval(0.1, 0.7), 0.7, 0.6),
    ],
)
def test_every_bound_maps_inside_with_a_finite_raw_value(constraint, at, inside, dtype):
    value = torch.tensor(at, dtype=dtype)
    raw = constraint.inverse_transform(value)
    assert torch.isfinite(raw)
    back = constraint.transform(raw)
    # the bound, up to the rounding of the bound's own dtype (the default dtype) or the value's
    assert abs(float(back) - at) <= 8 * torch.finfo(torch.float32).eps * abs(at)
    inside = torch.tensor(inside, dtype=dtype)
    torch.testing.assert_close(constraint.transform(constraint.inverse_transform(inside)), inside)
