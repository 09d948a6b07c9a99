"""Baselines for bench/tracker_pixels.py: asyncio servers that only answer the pixel GIF.

    python bench/bare_gif_server.py PORT protocol           # asyncio.Protocol on uvloop
    python bench/bare_gif_server.py PORT asyncio-protocol   # asyncio.Protocol, standard loop
    python bench/bare_gif_server.py PORT streams            # asyncio streams, standard loop

The Protocol servers parse nothing but the end of each request's headers: on uvloop, the ceiling
a Python server can reach on one core, not a usable HTTP implementation. `streams` is the plain
asyncio way to write a server (start_server, readuntil, write): what "a bare asyncio server"
looks like in most code.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nCache-Control: no-store\r\n"
    b"Content-Length: %d\r\n\r\n" % len(GIF) + GIF
)


class GifProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def serve_protocol(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(GifProtocol, "127.0.0.1", port)
    await server.serve_forever()


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve_streams(port: int) -> None:
    server = await asyncio.start_server(answer, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    port, kind = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "protocol"
    if kind == "streams":
        asyncio.run(serve_streams(port))
    elif kind == "asyncio-protocol":
        asyncio.run(serve_protocol(port))
    else:
        uvloop.run(serve_protocol(port))
