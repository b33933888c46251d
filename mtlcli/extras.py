"""Optional integrations live in pip extras; a missing one is a one-line error naming what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from mtlcli.errors import UserError


def require(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the Python package '{module.split('.')[0]}', which is not installed; "
                        f"install it with: pip install \"mtlcli[{extra}]\"") from None
