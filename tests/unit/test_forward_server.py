"""ForwardServer in-process on loopback: acks only after the handler returns, a failing
handler means no ack, a graceful stop lets the request being handled finish, and no
client can hold the server for others (deadlines, room made when full, bounded bytes)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import msgpack
import pytest
from prometheus_client import CollectorRegistry

from patterns.common.forward import protocol
from patterns.common.forward.protocol import Event
from patterns.common.forward.server import ForwardMetrics, ForwardServer


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


# --- nobody holds the server for others --------------------------------------------------


async def closed(reader: asyncio.StreamReader, within: float = 5) -> bool:
    """True once the server has closed the connection (whatever it sent before)."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except ConnectionError:
        pass
    return True


def rejected(server: ForwardServer, reason: str) -> float:
    assert server.metrics is not None
    return server.metrics.rejected.labels(reason=reason)._value.get()


def new_server(handler: Any = None, **options: Any) -> ForwardServer:
    async def store_nothing(_tag: str, _events: list[Event]) -> None:
        return None

    metrics = ForwardMetrics(CollectorRegistry())
    return ForwardServer(
        "127.0.0.1", 0, handler or store_nothing, udp_heartbeat=False, metrics=metrics, **options
    )


def test_a_trickled_request_is_closed_at_its_deadline_however_often_bytes_arrive() -> None:
    async def scenario() -> None:
        server = new_server(frame_timeout=0.5, idle_timeout=60)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        frame = protocol.encode_packed_forward("t", entries(50), 50, "c")
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            for byte in frame:  # a byte every 50 ms: each read would reset an idle timer
                writer.write(bytes([byte]))
                sent += 1
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        assert await closed(reader)
        assert not trickling.done() and sent < len(frame)  # closed while still trickling
        trickling.cancel()
        assert rejected(server, "frame_timeout") == 1
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_a_trickled_ping_is_closed_at_the_handshake_deadline() -> None:
    async def scenario() -> None:
        server = new_server(shared_key="k", handshake_timeout=0.5, idle_timeout=60)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        helo = protocol.decode_helo(await read_response(reader))
        ping, _ = protocol.encode_ping(helo, "cli", "k")

        async def trickle() -> None:
            for byte in ping[:-1]:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        assert await closed(reader)
        assert not trickling.done()
        trickling.cancel()
        assert rejected(server, "bad_handshake") == 1
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_when_every_connection_is_taken_the_one_idle_longest_makes_room() -> None:
    async def scenario() -> None:
        server = new_server(max_connections=3, idle_timeout=600)
        await server.start()
        port = server.port
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        while len(server._connections) < 3:
            await asyncio.sleep(0.01)
        # A fourth client is served: the first idle connection gives way.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(protocol.encode_packed_forward("t", entries(2), 2, "c4"))
        assert await read_response(reader) == {"ack": "c4"}
        assert await closed(idle[0][0])
        assert server.metrics is not None
        assert server.metrics.evicted.labels(state="idle")._value.get() == 1
        # The others are still open, and a client that has just been served is the last
        # to give way: the next newcomer takes the oldest idle one.
        newcomer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(idle[1][0])
        writer.write(protocol.encode_packed_forward("t", entries(1), 1, "c5"))
        assert await read_response(reader) == {"ack": "c5"}
        for _, w in [*idle, newcomer]:
            w.close()
        writer.close()
        await server.stop()

    asyncio.run(scenario())


def test_a_connection_whose_request_is_being_stored_never_gives_way() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(_tag: str, _events: list[Event]) -> None:
            await release.wait()

        server = new_server(slow, max_connections=1)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(protocol.encode_packed_forward("t", entries(1), 1, "busy"))
        while not any(c.busy for c in server._connections.values()):
            await asyncio.sleep(0.01)
        other_reader, other = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed(other_reader)  # refused: nobody could make room
        assert rejected(server, "too_many_connections") == 1
        release.set()
        assert await read_response(reader) == {"ack": "busy"}
        writer.close()
        other.close()
        await server.stop()

    asyncio.run(scenario())


def test_bytes_waiting_over_all_connections_are_bounded_oldest_request_gives_way() -> None:
    async def scenario() -> None:
        limits = protocol.Limits(max_frame_bytes=400_000)
        server = new_server(limits=limits, max_buffered_bytes=1_000_000, frame_timeout=60)
        await server.start()
        port = server.port
        big = protocol.encode_packed_forward("t", b"\x00" * 390_000, 1, "big")
        holders = []
        for _ in range(2):  # 2 x 390 KB held, partial
            holders.append(await asyncio.open_connection("127.0.0.1", port))
            holders[-1][1].write(big[:-1])
            while server._buffered < len(holders) * (len(big) - 1):
                await asyncio.sleep(0.01)
        # A third such request does not fit: the request started first gives way.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(big[:-1])
        assert await closed(holders[0][0])
        while server._buffered < 2 * (len(big) - 1):
            await asyncio.sleep(0.01)
        assert server._buffered <= 1_000_000
        assert server.metrics is not None
        assert server.metrics.evicted.labels(state="receiving")._value.get() == 1
        # The survivors complete: bad entries, but read whole and answered by a close.
        writer.write(big[-1:])
        assert await closed(reader)
        assert rejected(server, "bad_entry") == 1
        for _, w in [*holders, (reader, writer)]:
            w.close()
        await server.stop()

    asyncio.run(scenario())


def test_a_ping_that_is_not_utf8_gets_a_failure_pong_and_is_counted() -> None:
    async def scenario() -> None:
        server = new_server(shared_key="k", server_hostname="srv")
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_response(reader)  # HELO
        # A PING whose digest is the bytes 0xff 0xfe in a msgpack str.
        writer.write(b"\x96\xa4PING\xa3cli\xc4\x04salt\xa2\xff\xfe\xa0\xa0")
        pong = protocol.decode_pong(await read_response(reader))
        assert pong.auth_result is False and pong.reason == "invalid ping message"
        assert await closed(reader)
        assert rejected(server, "bad_handshake") == 1
        writer.close()
        await server.stop()

    asyncio.run(scenario())
