"""Numeric core: Cholesky with jitter, inv-quad/log-det with analytic backward, operators."""

from torchgp.linalg.cholesky import diagnose_not_psd, psd_safe_cholesky
from torchgp.linalg.inv_quad_logdet import inv_quad_logdet, solve
from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, KernelOperator, Operator, as_operator

__all__ = [
    "psd_safe_cholesky",
    "diagnose_not_psd",
    "inv_quad_logdet",
    "solve",
    "Operator",
    "DenseOperator",
    "KernelOperator",
    "AddedDiagOperator",
    "as_operator",
]
