"""The science is one regular, installable package (not a namespace directory that only an
editable install finds)."""
import importlib
import pkgutil

import ipcond


def test_ipcond_is_a_regular_package_with_a_version():
    # setuptools' find_packages skips folders without __init__.py: `pip install .` would ship nothing.
    assert ipcond.__file__ is not None and ipcond.__file__.endswith("__init__.py")
    assert ipcond.__version__ and ipcond.__version__ != "0+unknown"


def test_every_module_imports_without_heavy_side_effects():
    names = [m.name for m in pkgutil.iter_modules(ipcond.__path__)]
    for concern in ("data", "prompts", "training", "generation", "judging", "stats", "plots"):
        assert concern in names
    for name in names:
        importlib.import_module(f"ipcond.{name}")
