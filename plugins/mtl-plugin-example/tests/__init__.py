"""Tests of the example plugin (a package, so its conftest does not shadow the main test suite's)."""
