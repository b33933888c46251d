"""Test the source tree when the package is not installed (an installed copy is used as is).

The package is imported from src/ by location rather than by putting src/ on sys.path: a build
leaves src/mtl_plugin_example.egg-info behind, and on sys.path that metadata would make mtlcli
discover this plugin in every other test of the session.
"""

import importlib.util
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mtl_plugin_example"

if importlib.util.find_spec("mtl_plugin_example") is None:
    spec = importlib.util.spec_from_file_location(
        "mtl_plugin_example", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
