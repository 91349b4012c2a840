"""How the shipped checks report a broken contract.

A check that used ``assert`` would pass everything under ``python -O``, which strips
asserts: :func:`expect` raises whatever the interpreter's flags.
"""

from __future__ import annotations


class ContractFailure(AssertionError):
    """A plug-in broke the contract a check tests (an ``AssertionError``, as pytest expects)."""


def expect(condition: object, message: str) -> None:
    """Raise :class:`ContractFailure` with ``message`` unless ``condition`` is true.

    Raises:
        ContractFailure: ``condition`` is false.
    """
    if not condition:
        raise ContractFailure(message)
