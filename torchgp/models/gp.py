"""Base of every GP model, and the forward-hook dispatch of models whose ``__call__`` is not ``forward``."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch.nn.modules import module as _nn_module

from torchgp.means import ConstantMean
from torchgp.module import Module


class OldVersionWarning(UserWarning):
    """A ``state_dict`` in an older GPyTorch layout was converted on load; re-save the model."""


def call_with_hooks(module: Module, fn: Callable, args: tuple, kwargs: dict):
    """``fn(*args, **kwargs)`` wrapped in ``module``'s (and the global) forward pre-hooks and forward hooks.

    A GP model's ``__call__`` computes something other than its ``forward`` (the prior): ``q(f(x))``
    through a variational strategy, or a predictive distribution. ``nn.Module.__call__`` would run
    ``forward``; this runs ``fn`` instead with ``register_forward_pre_hook`` / ``register_forward_hook``
    semantics: a pre-hook may replace the arguments, a hook may replace the output, hooks registered
    ``with_kwargs=True`` see the keyword arguments, and ``always_call=True`` hooks run when ``fn`` raises.
    (Backward hooks need tensor outputs; a distribution is not one, so they do not apply here.)

    Args:
        module: the model the hooks are registered on.
        fn: the computation, called as ``fn(*args, **kwargs)``.
        args: positional arguments (``(inputs,)``).
        kwargs: keyword arguments.

    Returns:
        The output of ``fn``, or what a forward hook returned in its place.
    """
    global_pre = _nn_module._global_forward_pre_hooks
    global_post = _nn_module._global_forward_hooks
    if not (module._forward_pre_hooks or module._forward_hooks or global_pre or global_post):
        return fn(*args, **kwargs)
    for hook_id, hook in (*global_pre.items(), *module._forward_pre_hooks.items()):
        if hook_id in module._forward_pre_hooks_with_kwargs:
            res = hook(module, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(
                        f"forward pre-hook must return None or a tuple (new_args, new_kwargs); got {res}."
                    )
                args, kwargs = res
        else:
            res = hook(module, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
    always = {**_nn_module._global_forward_hooks_always_called, **module._forward_hooks_always_called}
    with_kwargs = {**_nn_module._global_forward_hooks_with_kwargs, **module._forward_hooks_with_kwargs}
    called = set()
    result = None
    try:
        result = fn(*args, **kwargs)
        for hook_id, hook in (*global_post.items(), *module._forward_hooks.items()):
            called.add(hook_id)
            res = hook(module, args, kwargs, result) if hook_id in with_kwargs else hook(module, args, result)
            if res is not None:
                result = res
        return result
    except Exception:
        for hook_id, hook in (*global_post.items(), *module._forward_hooks.items()):
            if hook_id in always and hook_id not in called:
                called.add(hook_id)
                hook(module, args, kwargs, result) if hook_id in with_kwargs else hook(module, args, result)
        raise


def _legacy_constant_mean(model, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: GPyTorch < 1.9's ``<mean>.constant`` ``(*batch, 1)`` → ``raw_constant`` ``(*batch)``."""
    for name, mod in model.named_modules():
        if not isinstance(mod, ConstantMean):
            continue
        base = f"{prefix}{name}." if name else prefix
        old, new = base + "constant", base + "raw_constant"
        if old in state_dict and new not in state_dict:
            value = state_dict.pop(old)
            if value.numel() == mod.raw_constant.numel():
                value = value.reshape(mod.raw_constant.shape)
            state_dict[new] = value
            warnings.warn(
                f"state_dict key {old!r} is GPyTorch's old name of the constant mean; it was loaded as {new!r} "
                f"with shape {tuple(value.shape)}. Re-save the model to store the current layout.",
                OldVersionWarning,
                stacklevel=4,
            )


class GP(Module):
    """Base class of GP models (exact, approximate, lists).

    ``load_state_dict`` also reads GPyTorch's older layouts (a ``ConstantMean``'s ``constant`` key).
    """

    def __init__(self):
        super().__init__()
        self._register_load_state_dict_pre_hook(_legacy_constant_mean, with_module=True)
