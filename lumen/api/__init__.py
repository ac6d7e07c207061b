"""The read-only API (blueprint sections 41 and 47): app (the Api and its server), queries
(parameters and SQL), openapi (the /openapi.json document), static/ (the live page)."""
