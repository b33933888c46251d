"""What pyproject.toml declares points at objects that fit mtlcli's interface for their kind."""

import importlib
import tomllib
from pathlib import Path

import pytest

from mtlcli.plugin import ENTRY_POINT_GROUPS, check_component

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
DECLARED = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]


def test_one_component_of_each_kind():
    assert set(DECLARED) == set(ENTRY_POINT_GROUPS.values())


@pytest.mark.parametrize("kind", list(ENTRY_POINT_GROUPS))
def test_entry_points_fit_their_kind(kind):
    for name, target in DECLARED[ENTRY_POINT_GROUPS[kind]].items():
        module, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert check_component(kind, obj) is None, f"{name} = {target}"
