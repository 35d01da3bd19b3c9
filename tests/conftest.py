"""Set-up shared by the whole test suite."""

from __future__ import annotations

import os

from audit.cache import cache_root


def pytest_configure(config) -> None:
    # pytester runs get a temporary HOME; pin the artefact cache so they reuse the built models
    # instead of rebuilding tiny-qwen (minutes) under the temporary home.
    os.environ.setdefault("SUBAUDIT_CACHE", str(cache_root()))
