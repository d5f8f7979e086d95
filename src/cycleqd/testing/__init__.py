"""Fixtures that ship with the package: tiny real models and data, built locally in seconds.

Kept apart from the product modules (as ``numpy.testing`` is): the tests, the tiny example
(``cycleqd models make-tiny``) and the benchmarks build on them, and they build on the product's
own training loop, engine and tasks rather than copies of them.
"""
