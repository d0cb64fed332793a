"""Prior mean functions (GPyTorch names)."""

from torchgp.means.derivative import ConstantMeanGrad, ConstantMeanGradGrad, LinearMeanGrad, LinearMeanGradGrad
from torchgp.means.means import ConstantMean, LinearMean, Mean, ZeroMean
from torchgp.means.multitask import MultitaskMean

__all__ = ["Mean", "ZeroMean", "ConstantMean", "LinearMean"]
__all__ += ["MultitaskMean"]
__all__ += ["ConstantMeanGrad", "ConstantMeanGradGrad", "LinearMeanGrad", "LinearMeanGradGrad"]
