"""The shape the HTTP cloud providers (RunPod, Vast.ai, Verda) share around their APIs.

Why a base: each rents one machine per node from a list of offers, names it after the
cluster and the node, falls back to the next offer when one has no capacity, reports a
node running only once its sshd presents the pinned host key, and at teardown removes
every instance still named after the cluster. Only the API calls differ; those stay in
each provider (its ``_candidates``, ``_listed``, ``_instance``, ``_started``, ``launch``,
``status``, ``destroy``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from ..core.provider import ClusterContext, ClusterKeys, ResourceNote, Resources, no_note
from ..errors import CapacityError, ProvisionError
from ..events import InstanceId, ProviderName
from ..model import ClusterSpec, Instance, Offer
from .cloud import (
    Candidate,
    describe_request,
    host_key_installed,
    launch_with_fallback,
    poll_until,
)
from .http import ApiClient, env_endpoint

__all__ = ["CloudCluster", "HttpCloud"]


@dataclass
class CloudCluster(ClusterContext):
    """One cluster on an HTTP cloud: the offers to try (from the one that last worked),
    what each instance was launched as, and the host key each must present."""

    candidates: list[Candidate] = field(default_factory=list)
    start: int = 0
    instances: dict[str, Candidate] = field(default_factory=dict)
    host_keys: dict[str, str] = field(default_factory=dict)
    note: ResourceNote = field(default=no_note, repr=False)

    @property
    def prefix(self) -> str:
        """What every node's name starts with: ``<cluster id>-n``."""
        return f"{self.cluster_id}-n"

    def node_name(self, node_id: int) -> str:
        """The name (label, hostname) of one node: ``<cluster id>-n<node>``."""
        return f"{self.prefix}{node_id}"


CC = TypeVar("CC", bound=CloudCluster)


class HttpCloud(ABC, Generic[CC]):
    """The verbs an HTTP cloud provider shares; it speaks its API in the hooks.

    A provider names its context class (``context_type``), its API's default endpoint,
    image and credential, and implements ``_candidates`` (offers as candidates),
    ``_listed`` (its live instances' ids and names), ``_instance`` and ``_started`` (one
    instance as the API describes it, and what that says of a starting one) and the
    instance verbs.
    """

    name: ProviderName
    context_type: type[CC]
    endpoint: ClassVar[str]
    default_image: ClassVar[str]
    credential: ClassVar[str]
    key_hint: ClassVar[str] = ""  # how to set the credential, for the missing-key error
    noun: ClassVar[str] = "instance"  # what the provider calls one (RunPod: a pod)
    ssh_user = "root"

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        image: str | None = None,
        **client_options: Any,
    ) -> None:
        """A provider whose API takes a key as a bearer token (``api_key``, else what
        ``_read_key`` finds); a missing key is an error that says what to set."""
        self._key = api_key or self._read_key()
        if not self._key:
            raise ProvisionError(f"{self.name}: no credentials: set {self.key_hint}")
        self._connect(endpoint, image, client_options)

    def _read_key(self) -> str:
        return os.environ.get(self.credential, "").strip()

    def _connect(self, endpoint: str | None, image: str | None, options: Any) -> None:
        """The API client and image: ``SKYWARD_<NAME>_ENDPOINT`` and ``_IMAGE`` override
        the defaults (a test's simulator, another image)."""
        upper = self.name.upper()
        self.image = image or os.environ.get(f"SKYWARD_{upper}_IMAGE") or self.default_image
        base = endpoint or env_endpoint(f"SKYWARD_{upper}_ENDPOINT", self.endpoint)
        self._api = ApiClient(
            self.name, base, self.credential, auth=self._headers, classify=self._classify, **options
        )

    async def _headers(self) -> dict[str, str]:
        """The headers of each request: the API key as a bearer token."""
        return {"Authorization": f"Bearer {self._key}"}

    @staticmethod
    def _classify(status: int, body: Any) -> Exception | None:
        """The provider's own refusals (capacity, its error shapes); none by default."""
        return None

    # -- what each provider implements --------------------------------------------------

    @abstractmethod
    async def _candidates(self, spec: ClusterSpec) -> list[Candidate]:
        """The ways to launch a node of ``spec``, cheapest first."""

    @abstractmethod
    async def _listed(self) -> list[tuple[str, str]]:
        """The account's live instances: (id, name) each."""

    @abstractmethod
    async def _instance(self, instance_id: str) -> dict[str, Any] | None:
        """The instance as the API describes it, or None where it is gone."""

    @abstractmethod
    async def _started(self, context: CC, instance_id: str, row: dict[str, Any]) -> Instance | None:
        """The instance ``row`` describes once it runs with an SSH endpoint (see
        ``_running``), None while it is still starting; raises where it failed to start."""

    async def _provision(self, context: CC, keys: ClusterKeys) -> None:
        """Create the cluster's shared resources (none by default)."""

    def _restored(self, context: CC, resources: Resources) -> None:
        """Take what the ledger noted of the shared resources (nothing by default)."""

    async def _remove_resources(self, context: CC) -> None:
        """Remove the cluster's shared resources once its instances are gone."""

    @abstractmethod
    async def destroy(self, context: CC, instance_id: InstanceId) -> None:
        """Terminate one instance and return once it is gone."""

    # -- the shared verbs ---------------------------------------------------------------

    async def offers(self, spec: ClusterSpec) -> list[Offer]:
        """The machines matching ``spec``, one row per type and place, cheapest first."""
        seen: dict[tuple[str, str], Offer] = {}
        for c in await self._candidates(spec):
            seen.setdefault((c.offer.instance_type, c.offer.region), c.offer)
        return list(seen.values())

    async def prepare(
        self, cluster_id: str, spec: ClusterSpec, keys: ClusterKeys, note: ResourceNote = no_note
    ) -> CC:
        """Find the offers (this also checks the credentials), then the shared resources."""
        candidates = await self._candidates(spec)
        if not candidates:
            raise CapacityError(f"{self.name}: no offer matches {describe_request(spec)}")
        context = self.context_type(cluster_id, spec, candidates, note=note)
        await self._provision(context, keys)
        return context

    async def restore(
        self, cluster_id: str, spec: ClusterSpec, resources: Resources, note: ResourceNote = no_note
    ) -> CC:
        """The context of an existing cluster, from what was noted (no API call: the
        offers are found when a replaced node is launched)."""
        context = self.context_type(cluster_id, spec, [], note=note)
        self._restored(context, resources)
        return context

    async def wait_running(self, context: CC, instance_id: InstanceId, timeout: float) -> Instance:
        """Poll until the instance runs, has an SSH endpoint and its sshd presents the
        pinned host key; one that disappears or fails while starting is an error."""
        what = f"{self.name}: {self.noun} {instance_id}"

        async def ready() -> Instance | None:
            row = await self._instance(instance_id)
            if row is None:
                raise ProvisionError(f"{what} disappeared while starting")
            return await self._started(context, instance_id, row)

        return await poll_until(ready, timeout, f"{what} running")

    async def _wait_gone(self, instance_id: str, timeout: float, action: str) -> None:
        """Wait until the API no longer describes the instance (after ``action``)."""

        async def gone() -> bool | None:
            return True if await self._instance(instance_id) is None else None

        await poll_until(gone, timeout, f"{self.name}: {action} of {self.noun} {instance_id}")

    async def teardown(self, context: CC) -> None:
        """Destroy every instance still named after the cluster, then its resources."""
        for instance_id, name in await self._listed():
            if name.startswith(context.prefix):
                await self.destroy(context, instance_id)
        await self._remove_resources(context)

    async def _launch_node(
        self,
        context: CC,
        host_public_key: str,
        attempt: Callable[[Candidate], Awaitable[str]],
    ) -> InstanceId:
        """Launch with the first candidate that has capacity, from the one that last
        worked, and remember what the instance is and which host key it must show."""
        if not context.candidates:  # a restored context: offers are found when needed
            context.candidates = await self._candidates(context.spec)
        instance_id, index = await launch_with_fallback(
            self.name, context.candidates, context.start, attempt
        )
        context.start = index
        context.instances[instance_id] = context.candidates[index]
        context.host_keys[instance_id] = host_public_key
        return instance_id

    async def _find(self, name: str) -> str | None:
        """The id of a live instance called ``name`` (a launch whose answer was lost)."""
        return next((iid for iid, found in await self._listed() if found == name), None)

    async def _running(
        self, context: CC, instance_id: str, ip: str, port: int, *, spot: bool, region: str
    ) -> Instance | None:
        """The instance at ``ip:port`` once its sshd presents the pinned host key."""
        expected = context.host_keys.get(instance_id)
        if expected and not await host_key_installed(ip, port, expected):
            return None
        candidate = context.instances.get(instance_id)
        return Instance(
            id=instance_id,
            status="running",
            ip=ip,
            ssh_port=port,
            spot=spot,
            region=region,
            offer=candidate.offer if candidate else None,
        )
