"""A gRPC-Web client that is not the gateway's: Python's http.client over
HTTP/1.1, messages encoded by hand (protobuf wire format), frames and
trailers read as PROTOCOL-WEB.md describes them. Prints what it got as JSON.

usage: client.py ECHO_BASE STREAMS_BASE
"""

import base64
import http.client
import json
import struct
import sys
from urllib.parse import urlsplit


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def fields(message):
    """Field number -> raw value (varints as ints, length-delimited as bytes)."""
    out, i = {}, 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = read_varint(message, i)
        elif wire == 2:
            length, i = read_varint(message, i)
            out[number], i = message[i : i + length], i + length
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return out


def frame(message):
    return b"\x00" + struct.pack(">I", len(message)) + message


def decode_text(body):
    out, start = b"", 0
    for end in range(4, len(body) + 1, 4):
        if body[end - 1 : end] == b"=" or end == len(body):
            out += base64.b64decode(body[start:end], validate=True)
            start = end
    return out


def parse(body):
    messages, trailers, i = [], None, 0
    while i < len(body):
        flag, length = body[i], struct.unpack(">I", body[i + 1 : i + 5])[0]
        payload, i = body[i + 5 : i + 5 + length], i + 5 + length
        if flag == 0x80:
            trailers = {}
            for line in payload.decode("ascii").split("\r\n"):
                if line:
                    name, value = line.split(": ", 1)
                    trailers[name] = value
        elif flag == 0:
            messages.append(payload)
        else:
            raise ValueError("unexpected frame flag %#x" % flag)
    return messages, trailers


def call(base, path, content_type, body):
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request(
        "POST",
        path,
        body=body,
        headers={
            "content-type": content_type,
            "accept": content_type,
            "x-grpc-web": "1",
            "x-user-agent": "python-http-client/1",
        },
    )
    response = conn.getresponse()
    data = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    if response.status != 200:
        raise SystemExit("HTTP %d for %s" % (response.status, path))
    if headers.get("content-type") != content_type:
        raise SystemExit("content-type %r for %s" % (headers.get("content-type"), path))
    if content_type.startswith("application/grpc-web-text"):
        data = decode_text(data)
    return headers, parse(data)


def main():
    echo_base, streams_base = sys.argv[1], sys.argv[2]
    result = {}

    # Unary, binary: testing.v1.Everything{string_value (14) = "..."}
    text = "hello from python".encode()
    request = varint(14 << 3 | 2) + varint(len(text)) + text
    _, (messages, trailers) = call(
        echo_base, "/testing.v1.EverythingService/Echo", "application/grpc-web+proto", frame(request)
    )
    result["echo"] = [fields(m)[14].decode() for m in messages]
    result["echo_status"] = trailers["grpc-status"]

    # Server streaming, text: testing.v1.TicksRequest{count (1) = 3}
    request = varint(1 << 3 | 0) + varint(3)
    _, (messages, trailers) = call(
        streams_base,
        "/testing.v1.Streaming/Ticks",
        "application/grpc-web-text",
        base64.b64encode(frame(request)),
    )
    result["ticks"] = [fields(m)[1] for m in messages]
    result["ticks_status"] = trailers["grpc-status"]

    # An unknown method: trailers-only, the status in the headers.
    headers, (messages, trailers) = call(
        echo_base, "/testing.v1.EverythingService/Nope", "application/grpc-web", frame(b"")
    )
    result["unknown_status"] = headers["grpc-status"]
    result["unknown_body_frames"] = len(messages) + (trailers is not None)

    print(json.dumps(result))


main()
