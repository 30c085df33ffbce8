"""Log configuration for the standalone server: text lines or one JSON object per line.

:func:`configure_logging` is called by ``python -m ccx_asgi``; hosts that embed the sub-app keep
their own logging setup and may put :class:`JSONFormatter` on a handler for the same JSON lines.
The request records those lines carry are made in :mod:`ccx_asgi.observability`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["JSONFormatter", "configure_logging"]


# Standard LogRecord attributes, plus uvicorn's ANSI-coloured duplicate of its message.
_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JSONFormatter(logging.Formatter):
    """Formats every log record as one JSON object per line.

    Keys: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``message``, the request fields when the record
    carries them (``extra={"ccx": {...}}``), and ``exc_info`` text for exceptions.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "ccx", None)
        if isinstance(fields, dict):
            data.update(fields)
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and key != "ccx" and key not in data:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure_logging(log_format: str = "text", level: str | int = "INFO") -> None:
    """Configure the root logger for the standalone server: ``text`` lines or ``json`` objects on stderr.

    ``httpx``'s per-request INFO lines are silenced unless ``level`` is DEBUG.

    Hosts that embed the sub-app configure logging themselves (use :class:`JSONFormatter` for JSON).
    """
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every upstream request URL at INFO: the request log already has the upstream path,
    # and a full URL may carry credentials in its user info. Keep it for DEBUG sessions only.
    logging.getLogger("httpx").setLevel(
        logging.DEBUG if logging.getLogger().level <= logging.DEBUG else logging.WARNING
    )
