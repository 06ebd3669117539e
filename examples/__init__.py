"""Runnable examples; a package so tests and type checkers import them by one name."""
