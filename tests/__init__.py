"""Test package: helpers are imported as `from tests.engine_support import ...` (pytest puts the repo root on sys.path)."""
