"""ForwardServer in-process on loopback: acks only after the handler returns, a failing
handler means no ack, and a graceful stop lets the request being handled finish."""

from __future__ import annotations

import asyncio
import socket
import time

import msgpack
import pytest

from patterns.common.forward import protocol
from patterns.common.forward.protocol import Event
from patterns.common.forward.server import ForwardServer


def entries(n: int) -> bytes:
    return b"".join(protocol.encode_entry(time.time(), {"log": f"l{i}"}) for i in range(n))


async def read_response(reader: asyncio.StreamReader) -> object:
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "connection closed before a response"
        unpacker.feed(data)
        for obj in unpacker:
            return obj


def test_ack_is_sent_only_after_the_handler_has_returned() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        stored: list[Event] = []

        async def handler(_tag: str, events: list[Event]) -> None:
            await release.wait()
            stored.extend(events)

        server = ForwardServer("127.0.0.1", 0, handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        chunk = protocol.new_chunk_id()
        writer.write(protocol.encode_packed_forward("t", entries(3), 3, chunk))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.3)  # not stored yet: no ack
        release.set()
        assert await read_response(reader) == {"ack": chunk}
        assert len(stored) == 3
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_a_failing_handler_gets_no_ack_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async def handler(_tag: str, _events: list[Event]) -> None:
            raise OSError("disk full")

        server = ForwardServer("127.0.0.1", 0, handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(protocol.encode_packed_forward("t", entries(1), 1, "c"))
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_graceful_stop_finishes_the_request_in_flight_and_closes_idle_connections() -> None:
    async def scenario() -> None:
        entered = asyncio.Event()
        stored: list[Event] = []

        async def handler(_tag: str, events: list[Event]) -> None:
            entered.set()
            await asyncio.sleep(0.3)
            stored.extend(events)

        server = ForwardServer("127.0.0.1", 0, handler)
        await server.start()
        port = server.port
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunk = protocol.new_chunk_id()
        writer.write(protocol.encode_packed_forward("t", entries(2), 2, chunk))
        await entered.wait()
        stopping = asyncio.create_task(server.stop(grace=5))
        assert await read_response(reader) == {"ack": chunk}
        assert len(stored) == 2
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        assert await asyncio.wait_for(idle_reader.read(100), 5) == b""
        await stopping
        assert not server.listening
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        idle_writer.close()

    asyncio.run(scenario())


def test_shared_key_handshake_then_ack() -> None:
    async def scenario() -> None:
        async def handler(_tag: str, _events: list[Event]) -> None:
            return None

        server = ForwardServer("127.0.0.1", 0, handler, shared_key="k", server_hostname="srv")
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        helo = protocol.decode_helo(await read_response(reader))
        ping, salt = protocol.encode_ping(helo, "cli", "k")
        writer.write(ping)
        pong = protocol.decode_pong(await read_response(reader))
        assert pong.auth_result and pong.server_hostname == "srv"
        assert pong.shared_key_hexdigest == protocol.shared_key_digest(salt, "srv", helo.nonce, "k")
        writer.write(protocol.encode_message("t", time.time(), {"a": 1}, chunk="c9"))
        assert await read_response(reader) == {"ack": "c9"}
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_udp_heartbeat_on_the_same_port_is_answered() -> None:
    async def scenario() -> None:
        async def handler(_tag: str, _events: list[Event]) -> None:
            return None

        server = ForwardServer("127.0.0.1", 0, handler)
        await server.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            udp.sendto(b"\x00", ("127.0.0.1", server.port))
            loop = asyncio.get_running_loop()
            reply = await asyncio.wait_for(loop.sock_recv(udp, 16), 5)
        assert reply == b"\x00"
        await server.stop()

    asyncio.run(scenario())


def test_requests_without_chunk_are_stored_in_order_before_a_later_ack() -> None:
    async def scenario() -> None:
        stored: list[int] = []

        async def handler(_tag: str, events: list[Event]) -> None:
            await asyncio.sleep(0.001)
            stored.extend(record["i"] for _, record in events)

        server = ForwardServer("127.0.0.1", 0, handler)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for i in range(100):  # fluent-logger's Message mode: no chunk, no ack
            writer.write(protocol.encode_message("t", time.time(), {"i": i}))
        writer.write(protocol.encode_message("t", time.time(), {"i": 100}, chunk="last"))
        assert await read_response(reader) == {"ack": "last"}
        assert stored == list(range(101))  # the ack covers everything sent before it
        writer.close()
        await server.stop()

    asyncio.run(scenario())
