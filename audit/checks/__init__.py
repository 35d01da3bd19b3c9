"""The checks users run: `pytest audit/ --model M [--adapter DIR]` (fixtures come from audit.plugin)."""
