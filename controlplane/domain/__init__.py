"""The pure domain core: lifecycle, resources, specs, placement, traversal specs.

Nothing in here performs I/O or imports a driver, Celery or a web framework
(checked by import-linter, see pyproject.toml).
"""
