"""pytest plugin for the subaudit audit (registered as the ``subaudit`` pytest11 entry point).

Placeholder while the full plugin is written: it registers nothing, so it is inert.
"""
