#!/usr/bin/env python3
"""The demo service of `oaknet up`: answers every HTTP request with who it is and who asked."""
import http.server
import socketserver
import sys

service, instance, node = sys.argv[1], sys.argv[2], sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {service} instance {instance} on node {node} (you are {self.client_address[0]})\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


print(f"demo web {service}.{instance} ready on {node}", flush=True)
Server(("0.0.0.0", 80), Handler).serve_forever()
