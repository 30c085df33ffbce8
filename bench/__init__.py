"""ccx_asgi's benchmark suite: fake upstreams, a bare relay, a load generator and the report.

Run ``python -m bench`` from the repository root (``--quick`` for a short run, ``--help`` for the
options). Everything runs on 127.0.0.1, bounded in time and request count. See
``docs/performance.md`` for the method and the latest numbers.
"""
