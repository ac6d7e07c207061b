"""The default configs and their schemas (configs/schemas/), shipped as package data:
installed, this folder is `lumen.configs` (pyproject.toml), found as lumen.CONFIGS."""
