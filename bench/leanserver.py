"""A lean, zero-latency OpenAI-ish responder on 127.0.0.1: test equipment for the benchmarks.

This is NOT the provider simulator (`squall.simulator`): it checks nothing, limits nothing and
answers every `POST .../chat/completions` at once with the same small chat completion. It exists
because the simulator's aiohttp handler tops out near the rate the clients under test can reach
on a small machine, and an overhead benchmark must measure the client, not the server.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) on a raw asyncio Protocol.
Run it as its own process: `python bench/leanserver.py [--port 0]` prints its base URL as its
first stdout line, serves until SIGTERM or SIGINT, then prints the requests it answered on
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys

_BODY = json.dumps(
    {
        "id": "chatcmpl-lean",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "lean-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    },
    separators=(",", ":"),
).encode()

_OK = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + _BODY
)
_NOT_FOUND_BODY = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_NOT_FOUND_BODY)).encode() + b"\r\n"
    b"\r\n" + _NOT_FOUND_BODY
)


class Counter:
    """How many chat requests were answered (one per server process)."""

    answered = 0


class LeanProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as bytes arrive, answer each at once."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end])
            length = 0
            # Header names are case-insensitive; only Content-Length matters here.
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)].strip())
            total = end + 4 + length
            if len(buf) < total:
                break
            del buf[:total]
            line = head.split(b"\r\n", 1)[0]
            if line.startswith(b"POST ") and b"/chat/completions" in line:
                Counter.answered += 1
                out.append(_OK)
            else:
                out.append(_NOT_FOUND)
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM/SIGINT; print the base URL first."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(LeanProtocol, "127.0.0.1", port, backlog=4096)
    sock = server.sockets[0]
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"answered {Counter.answered}", file=sys.stderr, flush=True)


def main() -> int:
    """Parse the flags and serve; return the exit status."""
    parser = argparse.ArgumentParser(description="Zero-latency OpenAI-ish responder (bench).")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
