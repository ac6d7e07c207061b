"""The event schemas, shipped as package data: installed, this folder is `lumen.schemas`
(pyproject.toml), found as lumen.SCHEMAS."""
