"""Tests of ccx_asgi.convert."""
