"""Tests of ccx_asgi.channels."""
