"""Getting a cell's pushed variables onto its nodes, crossing the kernel's uplink once.

A node that already holds a blob (by key) is sent nothing. When several nodes need a
blob, the kernel sends it to the head node only, which serves it on the cluster's private
network as it arrives; the others fetch it from there in parallel and check its sha256
against the head's. A node that
cannot reach the head is found out by that fetch (a connect timeout of
``REACH_TIMEOUT``): it gets the blob straight from the kernel, now and for the rest of
its life (``AgentClient.reaches_head``). A head on this machine takes the kernel's
blobs straight into its relay (``upload.py``), not through SSH.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import AgentError
from ..payload import Payload
from ..protocol import Missing, Run
from .agent_client import AgentClient, Answer
from .upload import Uploader

__all__ = ["REACH_TIMEOUT", "Relay", "deliver", "execute", "run_push"]

log = logging.getLogger("skyward")

REACH_TIMEOUT = 2.0  # seconds a node tries to connect to the head's relay


class Relay:
    """The head node's agent, the private address it serves blobs on, the cluster's
    token; ``uploader`` where the kernel may send the head's blobs to that address
    directly (a head on this machine)."""

    def __init__(
        self, head: AgentClient, host: str, token: str, uploader: Uploader | None = None
    ) -> None:
        self.head, self.host, self.token = head, host, token
        self.uploader = uploader


def run_push(payloads: dict[str, Payload]) -> dict[str, Any] | None:
    """What a cell's message carries: small variables inline, others by reference."""
    if not payloads:
        return None
    return {name: p.inline_bytes() if p.inline else p.reference() for name, p in payloads.items()}


async def deliver(
    agents: Sequence[AgentClient], payloads: Sequence[Payload], relay: Relay | None
) -> None:
    """Make every agent hold every large payload's blob (raises ``AgentError``)."""
    for payload in payloads:
        if payload.inline:
            continue
        needing = [a for a in agents if payload.key not in a.blobs]
        if not needing:
            continue
        direct = list(needing)
        if relay is not None:
            others = [a for a in needing if a is not relay.head and a.reaches_head]
            if others and (len(needing) > 1 or payload.key in relay.head.blobs):
                direct = [a for a in needing if a is not relay.head and a not in others]
                direct += await _through_head(relay, payload, others)
        await asyncio.gather(
            *(
                _to_head(relay, payload, False)
                if relay is not None and a is relay.head
                else a.put(payload)
                for a in direct
            )
        )


async def _to_head(relay: Relay, payload: Payload, digest: bool) -> None:
    """Give the head the blob: into its relay when it is on this machine (``digest``:
    others will fetch it), else (or if that fails) over SSH."""
    head, uploader = relay.head, relay.uploader
    if uploader is not None and not uploader.failed:
        try:
            host, port = await head.serve(relay.host, relay.token)
            await uploader.send(payload, host, port, relay.token, digest)
        except AgentError as exc:
            log.warning("skyward: %s; sending it over SSH from now on", exc)
        else:
            head.blobs.add(payload.key)
            return
    await head.put(payload)


async def _through_head(relay: Relay, payload: Payload, others: list[AgentClient]) -> list[Any]:
    """Send to the head while ``others`` fetch from it (the head relays what it has as it
    arrives); return those that could not fetch."""
    head = relay.head
    try:
        host, port = await head.serve(relay.host, relay.token)
    except AgentError as exc:
        log.warning("skyward: the head node cannot relay (%s); sending to each node", exc)
        if payload.key not in head.blobs:
            await head.put(payload)
        return others
    sending = (
        None if payload.key in head.blobs else asyncio.ensure_future(_to_head(relay, payload, True))
    )
    fetches = [asyncio.ensure_future(a.fetch(payload, host, port, relay.token)) for a in others]
    try:
        if sending is not None:
            await sending  # if the head cannot take it, no fetch can succeed either
        results = await asyncio.gather(*fetches, return_exceptions=True)
    finally:
        for task in fetches:
            task.cancel()
    failed = []
    for agent, result in zip(others, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, AgentError):
                raise result
            log.warning("skyward: %s; sending it blobs directly from now on", result)
            agent.reaches_head = False
            failed.append(agent)
    return failed


async def execute(
    agent: AgentClient, run: Run, payloads: Sequence[Payload], name: str = "cell"
) -> Answer:
    """Run the cell on ``agent``; if the node lost a blob meanwhile (evicted, a new
    disk), send it and run again."""
    by_key = {p.key: p for p in payloads}
    for _ in range(3):
        answer = await agent.execute(run, name)
        if not isinstance(answer, Missing):
            return answer
        unknown = [k for k in answer.keys if k not in by_key]
        if unknown:
            raise AgentError(f"node {agent.node.node}: asked for unknown blobs {unknown}")
        await asyncio.gather(*(agent.put(by_key[k]) for k in answer.keys))
    raise AgentError(f"node {agent.node.node}: keeps losing the cell's blobs (disk full?)")
