"""Strict fake upstreams (stand-ins for paid services only), as plain ASGI apps."""
