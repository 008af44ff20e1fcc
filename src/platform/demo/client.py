#!/usr/bin/env python3
"""The demo client of `oaknet up`: every few seconds it calls the demo service through its RR_IP and its
Closest_IP and prints who answered."""
import sys
import time
import urllib.request

rr, closest, period = sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 5.0


def call(address):
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=3) as r:
            return r.read().decode().strip()
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        return f"failed: {e}"


print(f"demo client ready: RR_IP {rr}, Closest_IP {closest}", flush=True)
while True:
    print(f"RR_IP {rr}: {call(rr)} | Closest_IP {closest}: {call(closest)}", flush=True)
    time.sleep(period)
