"""TLS: certificates are verified unless the config says otherwise, against real HTTPS peers."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from _sink_receiver import Receiver, event, webhook_config

from watcher._exceptions import ConfigError, ConnectError
from watcher.config import MetaStudioSourceConfig
from watcher.simulator import Simulator, SimulatorConfig
from watcher.sinks import DeliveryError, WebhookSink
from watcher.sources import MetaStudioSource

PROJECT = "sim-project"
TOKEN = "tls-token"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_sim(ca: trustme.CA) -> AsyncIterator[Simulator]:
    """The simulator serving HTTPS with a certificate for 127.0.0.1 issued by a private CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    config = SimulatorConfig(seed=3, project_id=PROJECT, auth="token", tokens={TOKEN})
    async with Simulator(config, ssl_context=server_ctx) as sim:
        yield sim


def _config(url: str, **extra: Any) -> MetaStudioSourceConfig:
    values: dict[str, Any] = {
        "type": "metastudio",
        "endpoint": url,
        "project_id": PROJECT,
        "auth": {"type": "token", "token": TOKEN},
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
    }
    values.update(extra)
    return MetaStudioSourceConfig.model_validate(values)


def test_verification_is_on_by_default() -> None:
    """A source config that says nothing about TLS verifies certificates."""
    assert _config("https://example.invalid").verify_tls is True


@pytest.mark.anyio
async def test_untrusted_certificate_is_refused(https_sim: Simulator) -> None:
    """A certificate from a CA the system does not trust fails the poll; nothing is accepted."""
    assert https_sim.url.startswith("https://")
    async with MetaStudioSource("ms", _config(https_sim.url)) as source:
        with pytest.raises(ConnectError) as info:
            await source.fetch("task-1")
    assert "certificate" in repr(info.value.__cause__).lower()
    assert https_sim.stats().requests == 0  # the handshake failed before any request


@pytest.mark.anyio
async def test_private_ca_file_is_trusted(
    https_sim: Simulator, ca: trustme.CA, tmp_path: Path
) -> None:
    """``ca_file`` adds the private CA, and the same server is then accepted and verified."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    async with MetaStudioSource("ms", _config(https_sim.url, ca_file=str(pem))) as source:
        snapshot = await source.fetch("task-1")
    assert snapshot.task_id == "task-1"
    assert https_sim.stats().requests == 1


@pytest.mark.anyio
async def test_turning_verification_off_is_explicit(https_sim: Simulator) -> None:
    """Only ``verify_tls: false`` accepts the untrusted certificate."""
    async with MetaStudioSource("ms", _config(https_sim.url, verify_tls=False)) as source:
        snapshot = await source.fetch("task-1")
    assert snapshot.task_id == "task-1"


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that cannot be loaded names the key instead of silently trusting nothing."""
    config = _config("https://127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="ca_file"):
        MetaStudioSource("ms", config)


@pytest.fixture
async def https_receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    async with Receiver(ssl_context=server_ctx) as rx:
        yield rx


@pytest.mark.anyio
async def test_webhook_refuses_an_untrusted_receiver(https_receiver: Receiver) -> None:
    """The webhook sink verifies by default: the event is not handed to an unverified peer."""
    sink = WebhookSink("hook", webhook_config(https_receiver.url))
    try:
        with pytest.raises(DeliveryError) as info:
            await sink.deliver(event(1))
    finally:
        await sink.aclose()
    assert info.value.retryable  # kept in the outbox: fixing the trust store delivers it
    assert https_receiver.calls == []


@pytest.mark.anyio
async def test_webhook_trusts_its_ca_file(
    https_receiver: Receiver, ca: trustme.CA, tmp_path: Path
) -> None:
    """With the receiver's CA in ``ca_file`` the event is delivered over verified TLS."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    sink = WebhookSink("hook", webhook_config(https_receiver.url, ca_file=str(pem)))
    try:
        await sink.deliver(event(2))
    finally:
        await sink.aclose()
    assert [json.loads(c.body)["task_id"] for c in https_receiver.calls] == ["task-2"]
