"""One error hierarchy: every public exception class of the package derives from SubauditError."""

import importlib
import inspect
import pkgutil

import audit
from audit.errors import SubauditError, UsageError


def _modules():
    for info in pkgutil.walk_packages(audit.__path__, "audit."):
        if ".checks" in info.name or info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_public_exception_is_a_subaudit_error():
    classes = {cls for module in _modules() for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__.startswith("audit.") and not cls.__name__.startswith("_")}
    assert len(classes) >= 20
    stray = sorted(c.__qualname__ for c in classes if not issubclass(c, SubauditError))
    assert stray == []


def test_input_errors_are_usage_errors():
    from audit.config import ConfigError
    from audit.engines import AdapterError
    from audit.models import ModelNotFound
    from audit.pipeline.profiles import ProfileError
    from audit.probes import ProbeFileError

    assert all(issubclass(e, UsageError) for e in (ConfigError, AdapterError, ModelNotFound, ProfileError, ProbeFileError))
