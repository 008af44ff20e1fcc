#!/usr/bin/env python3
"""TCP request/response timing for `npm run bench` (data plane), run inside network namespaces.

  pingpong.py server PORT            echo server (one thread per connection); prints "ready" when listening
  pingpong.py rr HOST PORT N SIZE    N round trips of SIZE bytes on one connection (after 100 warm-up ones)
  pingpong.py crr HOST PORT N SIZE   N requests, each on a new connection (connect, SIZE bytes each way, close)
  pingpong.py first PORT WARM IP...  for each IP: the first connection (connect time, and connect + 1 byte
                                     each way), then WARM more connections to the same IP, timed the same way

Times are in microseconds; the client prints one JSON object. Sorting and percentiles happen here, so the
output stays small; `rr` and `crr` also return every 10th sample for the record.
"""
import json
import socket
import socketserver
import sys
import threading
import time


def percentiles(xs):
    s = sorted(xs)
    n = len(s)

    def p(q):
        return s[min(n - 1, max(0, -(-q * n // 100) - 1))]

    return {
        "n": n,
        "min": s[0],
        "p50": p(50),
        "p90": p(90),
        "p99": p(99),
        "max": s[-1],
        "mean": sum(s) / n,
    }


def recv_exact(sock, size):
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def connect(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rr(host, port, n, size):
    msg = b"x" * size
    s = connect(host, port)
    for _ in range(100):
        s.sendall(msg)
        recv_exact(s, size)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        s.sendall(msg)
        recv_exact(s, size)
        samples.append((clock() - t0) / 1000)
    s.close()
    return {**percentiles(samples), "every10th": [round(x, 1) for x in samples[::10]]}


def crr(host, port, n, size):
    msg = b"x" * size
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        s = connect(host, port)
        s.sendall(msg)
        recv_exact(s, size)
        s.close()
        samples.append((clock() - t0) / 1000)
    return {**percentiles(samples), "every10th": [round(x, 1) for x in samples[::10]]}


def one(host, port):
    """One connection: (connect time, connect + 1 byte each way), in microseconds."""
    t0 = time.perf_counter_ns()
    s = connect(host, port)
    t1 = time.perf_counter_ns()
    s.sendall(b"?")
    recv_exact(s, 1)
    t2 = time.perf_counter_ns()
    s.close()
    return (t1 - t0) / 1000, (t2 - t0) / 1000


def first(port, warm, ips):
    out = []
    for ip in ips:
        try:
            cold = one(ip, port)
            warms = [one(ip, port) for _ in range(warm)]
            out.append(
                {
                    "ip": ip,
                    "first_connect_us": cold[0],
                    "first_echo_us": cold[1],
                    "warm_connect_us": [w[0] for w in warms],
                    "warm_echo_us": [w[1] for w in warms],
                }
            )
        except OSError as e:
            out.append({"ip": ip, "error": str(e)})
    return out


def main():
    mode = sys.argv[1]
    if mode == "server":
        srv = Server(("0.0.0.0", int(sys.argv[2])), Echo)
        print("ready", flush=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        threading.Event().wait()
    elif mode == "rr":
        print(json.dumps(rr(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    elif mode == "crr":
        print(json.dumps(crr(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    elif mode == "first":
        print(json.dumps(first(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
