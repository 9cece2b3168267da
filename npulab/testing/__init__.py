"""Test doubles shipped with npulab so that tests of every issue (and lab dry runs) can use them."""
