"""Tests of ccx_asgi.middleware."""
