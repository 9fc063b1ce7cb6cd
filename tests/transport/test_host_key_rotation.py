"""After ``up`` the host key handed over at launch no longer authenticates the node: it was
replaced by one made on the node and pinned over the first connection. Real nodes."""

from __future__ import annotations

import asyncssh
import pytest
import skyward.session.session as session_module
from skyward.errors import TransportError
from skyward.model import ClusterSpec
from skyward.session import Session
from skyward.transport.ssh import connect

pytestmark = pytest.mark.slow


async def test_the_launch_time_host_key_is_retired(monkeypatch):
    handed_over: list[str] = []
    original = session_module.generate_host_key

    def recording() -> tuple[str, str]:
        private, public = original()
        handed_over.append(public)
        return private, public

    monkeypatch.setattr(session_module, "generate_host_key", recording)
    pool = Session()
    try:
        ready = await pool.up(ClusterSpec("container", nodes=2))
        nodes = {n.node: n for n in ready.cluster.nodes}
        entries = {e.node: e for e in pool.ledger.entries() if e.cluster_id == ready.cluster.id}
        assert len(handed_over) == 2
        for node in nodes.values():
            record = pool.registry.instance(node.instance.id)[1]
            assert record.host_public_key not in handed_over
            assert entries[node.node].host_public_key == record.host_public_key
            for retired in handed_over:
                with pytest.raises(TransportError, match="unexpected host key"):
                    await connect(node, retired, timeout=5.0)
            fresh = await connect(node, record.host_public_key, timeout=5.0)
            fresh.close()
            asyncssh.import_public_key(record.host_public_key)
        cell = pool.prepare(list(nodes.values()))
        await pool.run(cell, "1 + 1")
        assert all(answer.ok for answer in cell.results.values())
    finally:
        await pool.aclose()
