"""What a check finds: :class:`CheckItem` (one check) and :class:`CheckReport` (a group of them).

Shared by :func:`torchgp.check_kernel`, :func:`torchgp.check_gradients` and
:func:`torchgp.testing.check_kernel_conformance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CheckItem", "CheckReport", "ConformanceError"]


class ConformanceError(AssertionError):
    """A kernel broke the contract every kernel keeps (raised by :meth:`CheckReport.raise_if_failed`)."""


@dataclass
class CheckItem:
    """One check: its name, whether it passed, the measured value, the tolerance and a remedy.

    A check that does not apply to the kernel (``skipped``) passes; ``detail`` says why it was skipped.
    """

    name: str
    ok: bool
    value: float
    tolerance: float
    detail: str = ""
    skipped: bool = False


@dataclass
class CheckReport:
    """The outcome of a group of checks; ``ok`` is True when every check passed.

    ``str(report)`` is a readable table; ``report["psd"]`` gets one item by name.
    """

    subject: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failed(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]

    def __getitem__(self, name: str) -> CheckItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"no check named {name!r}; checks: {[i.name for i in self.items]}")

    def __bool__(self) -> bool:
        return self.ok

    def raise_if_failed(self) -> CheckReport:
        """Raise :class:`ConformanceError` listing the failed checks (with their remedies); else return self."""
        if not self.ok:
            raise ConformanceError(str(self))
        return self

    def __str__(self) -> str:
        width = max((len(i.name) for i in self.items), default=4)
        lines = [f"{self.subject}: {'all checks passed' if self.ok else f'{len(self.failed)} check(s) FAILED'}"]
        for i in self.items:
            mark = "skip" if i.skipped else ("ok  " if i.ok else "FAIL")
            lines.append(
                f"  [{mark}] {i.name:<{width}}  {i.value:.3g} (tolerance {i.tolerance:.1g})"
                + (f"  {i.detail}" if i.detail and (i.skipped or not i.ok) else "")
            )
        return "\n".join(lines)
