#!/usr/bin/env python3
"""A loopback proxy in front of DynamoDB Local that fails as DynamoDB does under load.

DynamoDB Local never throttles. AWS does: a write beyond a table's capacity (or the account's) is
refused with HTTP 400 and `ProvisionedThroughputExceededException` (or `ThrottlingException`), and
the client is to retry with backoff. opsd's cluster must come through that with no firing lost or
doubled, so the sandbox points AWS_ENDPOINT_URL_DYNAMODB here and this proxy forwards every request,
refusing a share of the writes to tables that ask for it.

Test control, not an AWS feature: a table whose name contains `throttle<N>` (N in 1..100) has N % of
its writes (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems) refused, half with
each of the two codes, before they reach DynamoDB Local (so a refused write changes nothing, as in
AWS). Reads are never refused. Everything else passes through unchanged.

Usage: ddb_proxy.py LISTEN_PORT UPSTREAM_PORT
"""
import http.client
import json
import random
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
MARK = re.compile(r"throttle(\d{1,3})")
CODES = [
    ("ProvisionedThroughputExceededException",
     "The level of configured provisioned throughput for the table was exceeded. Consider increasing your "
     "provisioning level with the UpdateTable API."),
    ("ThrottlingException", "Rate of requests exceeds the allowed throughput."),
]


def tables_of(body):
    """The table names a request names (TransactWriteItems and BatchWriteItem name them inside)."""
    names = set()
    if isinstance(body.get("TableName"), str):
        names.add(body["TableName"])
    for item in body.get("TransactItems", []):
        for op in item.values():
            if isinstance(op, dict) and isinstance(op.get("TableName"), str):
                names.add(op["TableName"])
    names.update(body.get("RequestItems", {}).keys())
    return names


def share(names):
    """The share of writes to refuse: the highest `throttle<N>` among the tables, as a fraction."""
    best = 0
    for n in names:
        for m in MARK.finditer(n):
            best = max(best, min(int(m.group(1)), 100))
    return best / 100


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *_):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        op = (self.headers.get("X-Amz-Target") or "").split(".")[-1]
        if op in WRITES:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            p = share(tables_of(body))
            if p > 0 and random.random() < p:
                code, message = random.choice(CODES)
                self.reply(400, json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                                            "message": message}).encode())
                return
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request("POST", self.path, body=raw, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.reply(resp.status, data, resp.getheader("Content-Type"))

    def do_GET(self):
        self.reply(200, b"opsd sandbox DynamoDB proxy\n", "text/plain")

    def reply(self, status, data, ctype="application/x-amz-json-1.0"):
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "opsd-sandbox-proxy")
        self.end_headers()
        self.wfile.write(data)


def main():
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    Proxy.upstream = upstream
    server = ThreadingHTTPServer(("127.0.0.1", listen), Proxy)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
