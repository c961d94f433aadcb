"""The admission webhook server: HTTPS in, AdmissionReview out, decisions made by the gates.

Muster serves admission itself (aiohttp) rather than through kopf's webhook machinery so that
every replica answers admission whether or not it is the active operator peer, malformed
bodies get a proper AdmissionReview answer, and the hot path does no per-request bookkeeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from muster.admission import pipeline as admissions
from muster.admission import verdicts
from muster.admission.webhooksettings import TLSFiles, WebhookSettings
from muster.kernel import answers as admission
from muster.kernel import deadlines, findings, gates, reviews

__all__ = ["Handler", "TLSFiles", "WebhookSettings", "build_app", "serve"]

logger = logging.getLogger("muster.webhook")

# The apiserver caps objects at ~1.5 MiB; a review carries object and oldObject.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def _admit(request: web.Request) -> web.Response:
    started = time.perf_counter()
    pipeline = request.app[_PIPELINE]
    try:
        phase = gates.Phase(request.match_info["kind"])
        mode = findings.Mode(request.match_info["mode"])
    except ValueError:
        raise web.HTTPNotFound(text=f"no webhook at {request.path}\n") from None
    error: str | None = "PipelineFailed"  # unless an answer says otherwise
    try:
        answer = await _answer(request, pipeline, phase, mode)
        error = answer.error
        return web.json_response(answer.review)
    except web.HTTPBadRequest:
        error = "MalformedReview"
        raise
    finally:
        # Every answer, however it ended (a cancelled handler too), timed end to end.
        pipeline.answered(phase, mode, time.perf_counter() - started, error)


@dataclasses.dataclass(frozen=True)
class _Answer:
    review: reviews.Response
    error: str | None  # admissions.request_error, or MalformedReview / PipelineFailed


async def _answer(
    request: web.Request, pipeline: admissions.Pipeline, phase: gates.Phase, mode: findings.Mode
) -> _Answer:
    body = await request.read()  # aiohttp answers 413 past client_max_size
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise web.HTTPBadRequest(text=f"body is not JSON: {error}\n") from None
    try:
        review = reviews.validate(data)
    except reviews.MalformedReview as error:
        logger.warning("malformed AdmissionReview: %s", error)
        return _Answer(
            admission.unjudgeable(error.uid, mode, f"malformed AdmissionReview: {error}", 400),
            "MalformedReview",
        )
    try:
        # The apiserver says how long it waits for this answer (?timeout=10s): the gates stop
        # in time for it, whatever deadline Muster was started with.
        time_left = deadlines.parse_go_duration(request.query.get("timeout", ""))
        content = None
        if pipeline.verdicts is not None:
            content = verdicts.content_key(body, review["request"]["uid"])
        return _Answer(
            *await pipeline.judge(review, phase, mode, time_left=time_left, content=content)
        )
    except Exception:  # a bug must never turn into an allow: fail closed, keep the trace in logs
        logger.exception("internal error judging %s", review["request"]["uid"])
        failed = admission.unjudgeable(
            review["request"]["uid"],
            mode,
            "internal error while judging this request; see the muster operator logs",
            500,
        )
        return _Answer(failed, "PipelineFailed")


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


_PIPELINE = web.AppKey("pipeline", admissions.Pipeline)


# Another webhook served beside admission (the guard's record of namespace mode changes).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    pipeline: admissions.Pipeline, extra_posts: Mapping[str, Handler] | None = None
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[_PIPELINE] = pipeline
    for path, handler in (extra_posts or {}).items():
        app.router.add_post(path, handler)
    app.router.add_post("/{kind}/{mode}", _admit)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _healthz)
    return app


def _ssl_context(tls: TLSFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certfile, tls.keyfile)
    return context


def _stamp(tls: TLSFiles) -> tuple[float, float]:
    return (os.stat(tls.certfile).st_mtime, os.stat(tls.keyfile).st_mtime)


async def _reload_certificates(context: ssl.SSLContext, tls: TLSFiles, interval: float) -> None:
    """Load rotated certificate files into the live context: new handshakes use them at once."""
    stamp = _stamp(tls)
    while True:
        await asyncio.sleep(interval)
        try:
            current = _stamp(tls)
            if current != stamp:
                context.load_cert_chain(tls.certfile, tls.keyfile)
                stamp = current
                logger.info("reloaded webhook certificate from %s", tls.certfile)
        except (OSError, ssl.SSLError) as error:
            # Mid-rotation the pair can be inconsistent for a moment: keep serving the old one.
            logger.warning("could not reload webhook certificate yet: %s", error)


async def serve(
    settings: WebhookSettings,
    pipeline: admissions.Pipeline,
    *,
    started: asyncio.Event | None = None,
    extra_posts: Mapping[str, Handler] | None = None,
) -> None:
    """Serve admission (and ``extra_posts``: path -> handler) until cancelled."""
    context = _ssl_context(settings.tls) if settings.tls else None
    app = build_app(pipeline, extra_posts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        logger.info(
            "serving admission webhooks on %s://%s:%d",
            "https" if context else "http",
            settings.host,
            settings.port,
        )
        if started is not None:
            started.set()
        if context is not None and settings.tls is not None:
            await _reload_certificates(context, settings.tls, settings.cert_check_interval)
        else:
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()
