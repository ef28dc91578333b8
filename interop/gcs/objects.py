"""Lists the objects under a prefix through Cloud Storage's JSON API, downloads each, and prints
what the service says of it next to what its bytes are.

    python objects.py ENDPOINT BUCKET PREFIX DIR

Follows nextPageToken. Writes each object's content to DIR/<index>, and prints a JSON array,
one entry per object: the service's name, size, md5Hash, crc32c, generation, updated and
contentType, then the size, MD5, CRC32C (base64, as Cloud Storage writes them) and line count
of the downloaded bytes, and the file it was written to.
"""

import base64
import hashlib
import json
import sys
import urllib.parse
import urllib.request

import google_crc32c

TIMEOUT = 60


def get(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return answer.read()


def listing(endpoint, bucket, prefix):
    base = f"{endpoint}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"
    token = None
    while True:
        query = {"prefix": prefix}
        if token:
            query["pageToken"] = token
        page = json.loads(get(f"{base}?{urllib.parse.urlencode(query)}"))
        yield from page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return


def describe(endpoint, bucket, item, path):
    name = urllib.parse.quote(item["name"], safe="")
    bucket = urllib.parse.quote(bucket, safe="")
    data = get(f"{endpoint}/storage/v1/b/{bucket}/o/{name}?alt=media")
    with open(path, "wb") as out:
        out.write(data)
    fields = ("name", "size", "md5Hash", "crc32c", "generation", "updated", "contentType")
    described = {field: item.get(field) for field in fields}
    described.update(
        {
            "bytes": len(data),
            "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "crc": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
            "lines": data.count(b"\n"),
            "file": path,
        }
    )
    return described


def main(endpoint, bucket, prefix, directory):
    items = sorted(listing(endpoint, bucket, prefix), key=lambda item: item["name"])
    described = [
        describe(endpoint, bucket, item, f"{directory}/{index}")
        for index, item in enumerate(items)
    ]
    json.dump(described, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
