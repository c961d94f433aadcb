"""The least an admission webhook can do: the baseline of the warm path.

    python benchmarks/trivial_webhook.py --port 9443 --tls-cert-file tls.crt --tls-key-file tls.key

aiohttp over TLS with the settings of Muster's own server (``admission/server.py``: the same
TLS context, body limit, no access log, one process and event loop): it reads the body, parses
it as JSON, and answers every AdmissionReview "allowed" with its uid. Whatever Muster spends
per request above this is the cost of judging; the suite measures both on the same body, the
same client and the same certificate, and the CPU of each process from ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path

from aiohttp import web

MAX_BODY_BYTES = 4 * 1024 * 1024  # as admission/server.py


async def admit(request: web.Request) -> web.Response:
    review = json.loads(await request.read())
    return web.json_response(
        {
            "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
    )


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert-file", type=Path, required=True)
    parser.add_argument("--tls-key-file", type=Path, required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/{kind}/{mode}", admit)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app, host=args.host, port=args.port, ssl_context=context, access_log=None, print=None
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
