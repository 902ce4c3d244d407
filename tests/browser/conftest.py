"""Browser tests live here; their fixtures (`browser`, `page`) are in tests/conftest.py."""
