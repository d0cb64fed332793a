"""GPyTorch's ``gpytorch.utils.generic`` module path; it exposes no names (use ``zip(..., strict=True)``)."""

__all__: list[str] = []
