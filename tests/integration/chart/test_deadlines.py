"""The chart's admission deadline follows ``webhook.timeoutSeconds``: the real helm renders the
Deployment, and ``muster run`` itself parses the rendered arguments, so what is checked is the
deadline the operator would run with, for several timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from muster.app import runtime
from muster.cli import main
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration


def _rendered(*args: str) -> tuple[list[str], list[dict[str, Any]]]:
    docs = rendering.documents(rendering.template(*args))
    (container,) = rendering.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    # The webhooks that run the gates (the pipeline's deadline is theirs).
    hooks = [
        hook
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
        for doc in rendering.by_kind(docs, kind)
        for hook in doc["webhooks"]
        if hook["name"].endswith(".pods.muster.dev")
    ]
    return list(container["args"]), hooks


def _deadline_run_gets(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """The admission deadline ``muster run`` starts with, given the rendered arguments."""
    seen: list[runtime.OperatorSettings] = []

    async def fake_run(settings: runtime.OperatorSettings) -> None:
        seen.append(settings)

    monkeypatch.setattr(runtime, "run", fake_run)
    pem = tmp_path / "tls.pem"
    pem.write_text("x")
    local = [
        f"{arg.split('=', 1)[0]}={pem}"
        if arg.startswith(("--tls-cert-file", "--tls-key-file"))
        else arg
        for arg in args
    ]
    assert local[0] == "run"
    assert main(local) == 0
    (settings,) = seen
    return settings.admission_deadline


@pytest.mark.parametrize(
    ("timeout", "deadline"), [(1, 0.5), (2, 1.0), (5, 4.0), (10, 8.0), (15, 12.0), (30, 24.0)]
)
def test_the_deadline_follows_the_webhook_timeout(
    timeout: int, deadline: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, hooks = _rendered(f"--set=webhook.timeoutSeconds={timeout}")
    assert {hook["timeoutSeconds"] for hook in hooks} == {timeout}
    assert f"--webhook-timeout={timeout}" in args
    assert not any(arg.startswith("--admission-deadline") for arg in args)
    assert _deadline_run_gets(args, tmp_path, monkeypatch) == deadline


def test_an_explicit_deadline_below_the_timeout_is_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --set keeps 9.5 a string (the schema refuses it): a fraction needs --set-json or a file.
    args, _ = _rendered(
        "--set=webhook.timeoutSeconds=12", "--set-json=webhook.admissionDeadlineSeconds=9.5"
    )
    assert "--webhook-timeout=12" in args
    assert "--admission-deadline=9.5" in args
    assert _deadline_run_gets(args, tmp_path, monkeypatch) == 9.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["webhook.timeoutSeconds=5", "webhook.admissionDeadlineSeconds=8"],
            "webhook.admissionDeadlineSeconds (8) must be below webhook.timeoutSeconds (5): "
            "the apiserver would stop waiting first",
        ),
        (
            ["webhook.admissionDeadlineSeconds=10"],
            "webhook.admissionDeadlineSeconds (10) must be below webhook.timeoutSeconds (10)",
        ),
        (
            ["webhook.admissionDeadlineSeconds=-1"],
            "webhook.admissionDeadlineSeconds must not be negative, not -1",
        ),
        (["webhook.timeoutSeconds=0"], "webhook.timeoutSeconds must be between 1 and 30"),
    ],
)
def test_the_guard_refuses_what_cannot_work(values: list[str], message: str) -> None:
    # Without the schema: the guard in templates/_validate.tpl alone must refuse.
    stderr = rendering.refusal(*(f"--set={value}" for value in values), schema=False)
    assert message in stderr, stderr


@pytest.mark.parametrize(
    ("values", "where"),
    [
        (["webhook.timeoutSeconds=0"], "/webhook/timeoutSeconds"),
        (["webhook.timeoutSeconds=31"], "/webhook/timeoutSeconds"),
        (["webhook.admissionDeadlineSeconds=30"], "/webhook/admissionDeadlineSeconds"),
        (["webhook.admissionDeadlineSeconds=-1"], "/webhook/admissionDeadlineSeconds"),
        (["webhook.admissionDeadlineSeconds=soon"], "/webhook/admissionDeadlineSeconds"),
        # What JSON schema cannot compare, the guard refuses (schema on, as helm install runs).
        (
            ["webhook.timeoutSeconds=5", "webhook.admissionDeadlineSeconds=8"],
            "must be below webhook.timeoutSeconds (5)",
        ),
    ],
)
def test_the_schema_refuses_what_cannot_work(values: list[str], where: str) -> None:
    stderr = rendering.refusal(*(f"--set={value}" for value in values))
    assert where in stderr, stderr
