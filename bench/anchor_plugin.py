#!/usr/bin/env python3
"""The anchor for bench/plugin.py: the smallest useful Docker secret-provider plugin, a threaded
Python HTTP server on a Unix socket answering Docker's legacy plugin protocol from a dict.
Usage: anchor_plugin.py SOCKET VALUES.json   (a JSON object {"STACK/NAME": "<base64 value>"},
read from a file so that no value is in argv; a benchmark fixture, never for real secrets)"""
import base64
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
with open(sys.argv[2]) as f:
    VALUES = json.load(f)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/Plugin.Activate":
            return self.answer(200, {"Implements": ["secretprovider"]})
        if self.path != "/SecretProvider.GetSecret":
            return self.answer(404, {"Err": "no route"})
        try:
            request = json.loads(body)
        except ValueError:
            return self.answer(400, {"Err": "malformed body"})
        labels = request.get("SecretLabels") or {}
        name = labels.get("keyd.secret", request.get("SecretName", ""))
        if name not in VALUES:
            return self.answer(200, {"Value": "", "Err": f"no secret named {name!r}", "DoNotReuse": True})
        reuse = labels.get("keyd.reuse", "true") != "false"
        self.answer(200, {"Value": VALUES[name], "Err": "", "DoNotReuse": not reuse})

    def address_string(self):
        return "local"

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


path = sys.argv[1]
if os.path.exists(path):
    os.unlink(path)
Server(path, Handler).serve_forever()
