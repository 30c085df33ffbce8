"""A small raw HTTP/1.1 keep-alive client for load generation.

A general-purpose client (httpx) would spend more CPU per request than the gateway under test on
this 2-core machine; this one writes precomputed request bytes and reads the answer with asyncio
streams (``Content-Length`` or chunked), recording the time to the first body bytes (the first SSE
event of a stream) and to the end of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


@dataclass(slots=True)
class Result:
    """One request's outcome; times in seconds from the moment the request was written."""

    status: int
    first: float
    total: float
    size: int
    error_body: bytes = b""


def build_request(path: str, body: bytes, headers: dict[str, str], *, port: int) -> bytes:
    """The raw bytes of one ``POST`` request."""
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; reopened transparently when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        return self._reader, self._writer

    async def close(self) -> None:
        """Close the socket."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> Result:
        """Send ``raw`` and read the whole answer."""
        reader, writer = await self._open()
        start = time.perf_counter()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        first = 0.0
        size = 0
        kept: list[bytes] = []  # the body is only kept for error answers
        if chunked:
            while True:
                size_line = await reader.readline()
                n = int(size_line.split(b";", 1)[0], 16)
                if n == 0:
                    await reader.readuntil(b"\r\n")
                    break
                piece = await reader.readexactly(n + 2)
                if not first:
                    first = time.perf_counter() - start
                size += n
                if status != 200:
                    kept.append(piece[:-2])
        elif length >= 0:
            kept.append(await reader.readexactly(length))
            size = length
            first = time.perf_counter() - start
        else:
            kept.append(await reader.read())
            size = len(kept[0])
            first = time.perf_counter() - start
            close = True
        total = time.perf_counter() - start
        if close:
            await self.close()
        return Result(status, first or total, total, size, b"".join(kept) if status != 200 else b"")
