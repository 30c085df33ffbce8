"""Service types: adapters (pure conversion) and the endpoint that does the upstream I/O."""
