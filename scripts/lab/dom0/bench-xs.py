#!/usr/bin/env python3
"""scripts/lab/dom0/bench-xs.py — owns: the lab's xenstore request-loop benchmark (runs in dom0).

A minimal xenstore wire-protocol client (docs: xen.git docs/misc/xenstore.txt; header
`struct xsd_sockmsg` = type, req_id, tx_id, len as little-endian u32) so that the loop measures
the server and the transport, not fork+exec of the CLI tools. Transports:
  xenbus  /dev/xen/xenbus: dom0 kernel -> shared ring -> the xenstore (daemon or stub domain);
          the only path a stub domain offers, so the one to compare servers on
  socket  /run/xenstored/socket: Unix socket, daemons only

Usage: bench-xs.py <server-name> <ops>
Prints `LAB-BENCH <server> <transport>-<op>[-median] <value> <unit>` lines (mean and median per
request). Exit 1 on a protocol error.
"""
import os
import socket
import struct
import sys
import time

XS_DIRECTORY = 1
XS_READ = 2
XS_WRITE = 11
XS_RM = 13
XS_ERROR = 16
HEADER = struct.Struct("<IIII")


class XenstoreError(Exception):
    pass


class Connection:
    def __init__(self, transport):
        self.request_id = 0
        if transport == "socket":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect("/run/xenstored/socket")
            self._send = self.sock.sendall
            self._recv = self.sock.recv
        else:
            self.fd = os.open("/dev/xen/xenbus", os.O_RDWR)
            self._send = self._write_all
            self._recv = lambda n: os.read(self.fd, n)

    def _write_all(self, data):
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def _recv_exact(self, length):
        chunks = []
        while length:
            chunk = self._recv(length)
            if not chunk:
                raise XenstoreError("connection closed")
            chunks.append(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def request(self, message_type, payload):
        self.request_id += 1
        self._send(HEADER.pack(message_type, self.request_id, 0, len(payload)) + payload)
        reply_type, reply_id, _, length = HEADER.unpack(self._recv_exact(HEADER.size))
        body = self._recv_exact(length)
        if reply_type == XS_ERROR:
            raise XenstoreError(body.rstrip(b"\0").decode())
        if reply_type != message_type or reply_id != self.request_id:
            raise XenstoreError(f"unexpected reply type {reply_type} id {reply_id}")
        return body


def timed(label, server, ops, function):
    """Runs function(0..ops-1); reports the mean and the median per request.

    Under TCG on a loaded host a request sometimes waits for a host time slice (the vCPU that must
    wake up is not running); the mean shows that cost, the median shows the typical request.
    """
    samples = []
    start = time.perf_counter()
    for index in range(ops):
        before = time.perf_counter()
        function(index)
        samples.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - start
    samples.sort()
    print(f"LAB-BENCH {server} {label} {elapsed / ops * 1e6:.0f} us/op", flush=True)
    print(f"LAB-BENCH {server} {label}-median {samples[len(samples) // 2] * 1e6:.0f} us/op", flush=True)
    return elapsed


def run(server, transport, ops):
    connection = Connection(transport)
    base = f"/lab-bench/{transport}"
    paths = [f"{base}/k{index}".encode() for index in range(ops)]
    timed(f"{transport}-write", server, ops,
          lambda i: connection.request(XS_WRITE, paths[i] + b"\0" + b"value-%d" % i))
    timed(f"{transport}-read", server, ops,
          lambda i: connection.request(XS_READ, paths[i] + b"\0"))
    for index in (0, ops - 1):
        value = connection.request(XS_READ, paths[index] + b"\0")
        if value != b"value-%d" % index:
            raise XenstoreError(f"read back {value!r} for {paths[index]!r}")
    # A listing must fit one 4096-byte reply, so only moderate op counts are checked this way.
    listing = connection.request(XS_DIRECTORY, base.encode() + b"\0") if ops <= 500 else b"\0" * ops
    entries = listing.count(b"\0")
    if entries != ops:
        raise XenstoreError(f"directory of {base} has {entries} entries, expected {ops}")
    connection.request(XS_RM, base.encode() + b"\0")


def main():
    server, ops = sys.argv[1], int(sys.argv[2])
    transports = ["xenbus"]
    if os.path.exists("/run/xenstored/socket"):
        transports.append("socket")
    for transport in transports:
        run(server, transport, ops)


if __name__ == "__main__":
    try:
        main()
    except (OSError, XenstoreError) as error:
        print(f"bench-xs: {error}", file=sys.stderr)
        sys.exit(1)
