#!/usr/bin/env python3
"""The demo client of `oaknet up`: every few seconds it calls the demo service by name (through the node's
DNS server: the bare service name is its RR_IP, `<...>.closest.oakestra` its Closest_IP) and prints who
answered and at which address the name resolved."""
import socket
import sys
import time
import urllib.request

rr, closest, period = sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 5.0


def call(name):
    try:
        address = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError as e:
        return f"failed to resolve: {e}"
    try:
        with urllib.request.urlopen(f"http://{name}/", timeout=3) as r:
            return f"{address}: {r.read().decode().strip()}"
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        return f"{address}: failed: {e}"


print(f"demo client ready: RR_IP by the name {rr}, Closest_IP by the name {closest}", flush=True)
while True:
    print(f"{rr} (RR_IP) {call(rr)} | {closest} (Closest_IP) {call(closest)}", flush=True)
    time.sleep(period)
