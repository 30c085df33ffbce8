"""Pure converters between the Responses API and upstream protocols (no I/O anywhere here)."""
