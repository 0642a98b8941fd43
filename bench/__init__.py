"""Load benchmarks for miniprogram_pay (not part of the test suite). Run ``python -m bench``."""
