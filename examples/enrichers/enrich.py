#!/usr/bin/env python3
"""A tracer `exec` enricher: the template to copy for your own.

tracer starts this program once (or `processes` times) and keeps it running. It
writes one JSON request per line on standard input:

    {"id": 7, "kind": "url", "value": "http://evil.example/%61dmin"}

and reads one JSON answer per line from standard output, with the same id:

    {"id": 7, "hits": [{"category": "Tracer_URL_Decoder",
                        "context": {"decodedURL": "http://evil.example/admin"}}]}

or {"id": 7, "error": "what went wrong"}. Answers may come in any order. Anything
written on standard error goes to tracer's log. Keep standard output for answers
only, and flush after each one.

The two functions below are the Python tool's demo enrichers: a URL decoder and a
hash describer. Add your own to FUNCTIONS (kind -> list of functions); each takes
the value and returns a list of hits.

Standard library only: it runs wherever Python 3 does.
"""

import json
import sys
import urllib.parse


def url_decoder(value):
    """The URL, percent-decoded once, when decoding changes it."""
    decoded = urllib.parse.unquote(value)
    if decoded == value:
        return []
    return [{"category": "Tracer_URL_Decoder", "context": {"decodedURL": decoded}}]


def hash_info(value):
    """Which digest a hash is, and its canonical (uppercase) form."""
    algorithms = {32: "MD5", 40: "SHA1", 64: "SHA256"}
    v = value.strip()
    if len(v) not in algorithms or any(c not in "0123456789abcdefABCDEF" for c in v):
        return []
    return [{
        "category": "Tracer_Hash_Info",
        "context": {"algorithm": algorithms[len(v)], "normalized": v.upper()},
    }]


FUNCTIONS = {
    "url": [url_decoder],
    "hash": [hash_info],
}


def answer(request):
    hits = []
    for function in FUNCTIONS.get(request.get("kind"), []):
        hits.extend(function(request.get("value", "")))
    return {"id": request["id"], "hits": hits}


def main():
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            print(f"not a request: {line.strip()[:200]}", file=sys.stderr)
            continue
        try:
            reply = answer(request)
        except Exception as e:  # a bug in one function must not stop the helper
            reply = {"id": request.get("id"), "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
