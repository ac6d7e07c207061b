"""db.init and db.ingest (installed: `lumen.tools.storage`)."""
