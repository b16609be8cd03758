"""The benchmark suite of ``invoke bench``: ``python -m bench.suite --help``."""
