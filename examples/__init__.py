"""Examples shipped with Greenlight: the demo product used by `make demo` and the tests."""
