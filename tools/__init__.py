"""The blueprint's tools, run by path (the Makefile) or, installed, as `lumen.tools` through
the console scripts (lumen/cli.py)."""
