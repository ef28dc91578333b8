"""Runs gcp-storage-emulator in memory on 127.0.0.1, on a free port, with one bucket.

    python emulator.py BUCKET

Prints the emulator's URL (http://127.0.0.1:PORT) on stdout once it listens, then logs every
request on stderr as `"METHOD PATH HTTP/1.1" STATUS -`, until it is killed.

One change to the emulator as shipped: it parses the body of any request sent as
`Content-Type: application/json` as JSON, so a simple upload (`uploadType=media`) of a JSON
object fails inside the emulator and the connection is closed without an answer. Google's
service stores such a body as the object's bytes, whatever its type; so does this launcher.
"""

import logging
import sys
import time

from gcp_storage_emulator import server

shipped_read_data = server._read_data


def read_data(request_handler, query):
    if query.get("uploadType") == ["media"]:
        raw = server._read_raw_data(request_handler)
        return server._decode_raw_data(raw, request_handler)
    return shipped_read_data(request_handler, query)


def main(bucket):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    server._read_data = read_data
    emulator = server.create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    emulator.start()
    # Port 0 lets the system choose; the listening socket says which it chose.
    port = emulator._api._httpd.server_address[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
