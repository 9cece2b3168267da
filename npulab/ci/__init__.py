"""The nightly CI: hardware matrix, workflow rendering, reports, history, drift and runner checks.

Pure functions over data files and JSON reports; the workflows and ``invoke ci.*`` call them.
"""
