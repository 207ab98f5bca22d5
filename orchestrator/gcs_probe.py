"""Is HOST:PORT a Ray GCS? Asked without sending any credential, within a deadline.

``ray.init(address=...)`` in Ray 2.60 waits forever on a port that accepts connections but is
not Ray's GCS, and with ``RAY_AUTH_MODE=token`` it sends the cluster token to whatever listens
there, repeatedly. Answering the HTTP/2 connection preface proves nothing (any HTTP/2 server
does), so before ``ray.init`` the driver makes one gRPC call of the GCS's own,
``ray.rpc.NodeInfoGcsService/GetClusterId``, over a plain socket that carries no token, with a
deadline, and accepts only the two answers a Ray GCS gives:

- a reply message whose protobuf holds a 28-byte ``cluster_id`` (field 2), when auth is off;
- ``grpc-status: 16`` (UNAUTHENTICATED) with a ``grpc-message`` from Ray's token check
  ("InvalidAuthToken..."), when token auth is on (Ray 2.60's default).

Anything else -- a web server, another gRPC service, a bare HTTP/2 endpoint that answers the
preface and then nothing -- is refused with one line. The Python gRPC package is not among Ray's
dependencies, so this speaks the few frames it needs itself (HPACK literals, no Huffman on the
request; a Huffman-coded answer is not decoded and so not accepted).
"""
from __future__ import annotations

import socket
import struct
import time

GCS_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"
PROBE_TIMEOUT_S = 5.0
CLUSTER_ID_BYTES = 28
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
RAY_AUTH_REJECTION = "InvalidAuthToken"
MAX_RESPONSE_BYTES = 1 << 20


class NotRayGcs(Exception):
    """One line: why HOST:PORT is not (or cannot be shown to be) a Ray GCS."""


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (lengths < 127)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _string(data: bytes, pos: int) -> tuple[str | None, int]:
    huffman = bool(data[pos] & 0x80)
    length, pos = _integer(data, pos, 7)
    raw = data[pos:pos + length]
    return (None if huffman else raw.decode("latin-1")), pos + length


def decode_headers(block: bytes, table: list[tuple[str | None, str | None]]) -> dict[str, str | None]:
    """The literal header fields of an HPACK block (names from static entries are not needed:
    the ones asked for here, grpc-status and grpc-message, are not in the static table).
    ``table``: the connection's dynamic table, newest first, updated in place."""
    fields: dict[str, str | None] = {}
    pos = 0
    while pos < len(block):
        byte = block[pos]
        if byte & 0x80:  # indexed field
            index, pos = _integer(block, pos, 7)
            if index > 61 and index - 62 < len(table):
                name, value = table[index - 62]
                if name is not None:
                    fields[name] = value
            continue
        if byte & 0xE0 == 0x20:  # dynamic table size update
            _, pos = _integer(block, pos, 5)
            continue
        indexing = bool(byte & 0x40)
        index, pos = _integer(block, pos, 6 if indexing else 4)
        if index == 0:
            name, pos = _string(block, pos)
        else:
            name = table[index - 62][0] if index > 61 and index - 62 < len(table) else None
        value, pos = _string(block, pos)
        if indexing:
            table.insert(0, (name, value))
        if name is not None:
            fields[name] = value
    return fields


def _is_cluster_id_reply(message: bytes) -> bool:
    """A gRPC message (5-byte prefix) holding a GetClusterIdReply with a 28-byte cluster_id."""
    if len(message) < 5 or message[0] != 0:
        return False
    body = message[5:5 + int.from_bytes(message[1:5], "big")]
    pos = 0
    while pos < len(body):
        key, pos = _varint(body, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(body, pos)
        elif wire == 2:
            length, pos = _varint(body, pos)
            if field == 2:
                return length == CLUSTER_ID_BYTES
            pos += length
        else:
            return False
    return False


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def check_ray_gcs(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Returns "open" or "token" (a Ray GCS without / with token auth); raises NotRayGcs."""
    target = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    request = (_literal(":method", "POST") + _literal(":scheme", "http") + _literal(":path", GCS_METHOD)
               + _literal(":authority", target) + _literal("content-type", "application/grpc")
               + _literal("te", "trailers"))
    try:
        conn = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as e:
        raise NotRayGcs(f"cannot reach {target} ({e.strerror or e or type(e).__name__})") from None
    table: list[tuple[str | None, str | None]] = []
    fields: dict[str, str | None] = {}
    message = b""
    received = b""
    try:
        conn.sendall(PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, 1, request)
                     + _frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"))
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout
            conn.settimeout(remaining)
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
            if len(received) > MAX_RESPONSE_BYTES:
                break
            buffer += chunk
            if len(received) >= 9 and received[3] != SETTINGS:  # an HTTP/2 server opens with SETTINGS
                raise NotRayGcs(f"{target} is not a Ray GCS (it does not speak HTTP/2, so not gRPC)")
            ended = False
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9:9 + length], buffer[9 + length:]
                if kind == SETTINGS and not flags & ACK:
                    conn.sendall(_frame(SETTINGS, ACK, 0))
                elif stream == 1 and kind == HEADERS:
                    fields.update(decode_headers(payload, table))
                elif stream == 1 and kind == DATA:
                    message += payload
                if stream == 1 and (kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM)) \
                        or kind == GOAWAY and len(payload) >= 8 and int.from_bytes(payload[:4], "big") < 1:
                    ended = True
            if ended:
                break
    except socket.timeout:
        raise NotRayGcs(f"no answer to a Ray GCS call from {target} within {timeout_s:g} s "
                        f"(something else listens there)") from None
    except (OSError, IndexError, ValueError) as e:
        raise NotRayGcs(f"{target} is not a Ray GCS ({type(e).__name__} while reading its answer)") from None
    finally:
        conn.close()
    status, detail = fields.get("grpc-status"), fields.get("grpc-message") or ""
    if status == "0" and _is_cluster_id_reply(message):
        return "open"
    if status == "16" and detail.startswith(RAY_AUTH_REJECTION):
        return "token"
    if not fields and not message:
        raise NotRayGcs(f"{target} is not a Ray GCS (it does not answer gRPC)")
    shown = f"grpc-status {status}" + (f": {detail[:80]}" if detail else "") if status else "no gRPC status"
    raise NotRayGcs(f"{target} is not a Ray GCS (its answer to {GCS_METHOD}: {shown})")
