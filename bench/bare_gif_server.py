"""The baseline for bench/tracker_pixels.py: an asyncio server that only answers the pixel GIF.

It parses nothing but the end of each request's headers, so it is the ceiling a Python server
on this event loop can reach on one core, not a fair HTTP implementation.
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


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(GifProtocol, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
