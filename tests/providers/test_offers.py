"""Offers across providers (``%skyward offers``, ``up`` without ``--provider``) against
the RunPod, Vast.ai and Verda simulators at once."""

from __future__ import annotations

import pytest
from skyward import providers
from skyward.errors import ProvisionError
from skyward.model import ClusterSpec
from skyward.providers.offers import choose_offer, format_offers, gather_offers

from .runpod.simulator import API_KEY as RUNPOD_KEY
from .runpod.simulator import RunPodSimulator
from .vastai.simulator import API_KEY as VAST_KEY
from .vastai.simulator import HOURS_PER_MONTH, STORAGE_COST, VastSimulator
from .vastai.simulator import api_base as vast_base
from .verda.simulator import CLIENT_ID, CLIENT_SECRET, VerdaSimulator
from .verda.simulator import api_base as verda_base

MINE = ["container", "runpod", "vastai", "verda"]


@pytest.fixture
def clouds(monkeypatch, tmp_path):
    """All three simulators, their endpoints and credentials in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no Vast CLI key file
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with RunPodSimulator() as rp, VastSimulator() as vast, VerdaSimulator() as verda:
        monkeypatch.setenv("SKYWARD_RUNPOD_ENDPOINT", rp.url)
        monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
        monkeypatch.setenv("SKYWARD_VASTAI_ENDPOINT", vast_base(vast))
        monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
        monkeypatch.setenv("SKYWARD_VERDA_ENDPOINT", verda_base(verda))
        monkeypatch.setenv("VERDA_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("VERDA_CLIENT_SECRET", CLIENT_SECRET)
        yield rp, vast, verda


async def test_offers_across_providers_cheapest_first(clouds, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY")
    spec = ClusterSpec("", accelerator="A100", accelerator_count=2, spot="never")
    rows, skipped = await gather_offers(spec, MINE)
    assert {name for name, _ in rows} == {"runpod", "verda"}
    prices = [offer.price_per_hour for _, offer in rows]
    assert prices == sorted(prices)
    assert rows[0][0] == "runpod" and rows[0][1].price_per_hour == pytest.approx(2.38)
    assert skipped == {
        "container": "this machine offers no GPUs",
        "vastai": "vastai: no credentials: set VAST_API_KEY (or run `vastai set api-key`)",
    }
    table = format_offers(rows, skipped)
    assert table.splitlines()[0].split() == [
        "provider", "instance", "type", "accelerator", "vCPUs", "memory", "on-demand/h",
        "spot/h", "region",
    ]  # fmt: skip
    assert "runpod" in table.splitlines()[1] and "$2.38" in table.splitlines()[1]
    assert "skipped vastai: vastai: no credentials: set VAST_API_KEY" in table


async def test_spot_prices_rank_spot_offers(clouds):
    spec = ClusterSpec("", accelerator="A100", accelerator_count=2, spot="always")
    rows, _ = await gather_offers(spec, ["runpod", "vastai", "verda"])
    disk = 40 * STORAGE_COST / HOURS_PER_MONTH  # Vast's price includes the disk rented
    assert rows[0][0] == "vastai"
    assert rows[0][1].spot_price_per_hour == pytest.approx(1.0 + disk, abs=1e-4)
    spot = [offer.spot_price_per_hour for _, offer in rows]
    assert spot == sorted(spot)


async def test_up_without_provider_picks_the_cheapest_cloud_and_says_so(clouds, monkeypatch):
    from skyward.jupyter.commands import _chosen
    from skyward.session import Session

    subset = {name: providers.PROVIDERS[name] for name in MINE}
    monkeypatch.setattr(providers, "PROVIDERS", subset)
    spec = ClusterSpec("", nodes=2, accelerator="A100", accelerator_count=2)
    chosen, name, offer, compared = await Session.choose_provider(spec)
    assert chosen.provider == name == "vastai" and chosen.nodes == 2
    out = _chosen(name, offer, compared)
    assert out.startswith("provider: vastai (cheapest of ") and "A100 PCIE x2" in out


def test_choose_offer_prefers_clouds_then_this_machine():
    from skyward.model import Offer

    local = ("container", Offer("container", "local-process"))
    cloud = ("verda", Offer("verda", "CPU.4V.16G", price_per_hour=0.03))
    assert choose_offer([local, cloud], {}, ClusterSpec("")) == cloud
    assert choose_offer([local], {"runpod": "no credentials"}, ClusterSpec("")) == local
    with pytest.raises(ProvisionError, match=r"no configured provider offers A100:2 .*runpod: x"):
        choose_offer([], {"runpod": "x"}, ClusterSpec("", accelerator="A100", accelerator_count=2))
