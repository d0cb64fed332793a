"""Prior mean functions (GPyTorch names)."""

from torchgp.means.means import ConstantMean, LinearMean, Mean, ZeroMean

__all__ = ["Mean", "ZeroMean", "ConstantMean", "LinearMean"]
