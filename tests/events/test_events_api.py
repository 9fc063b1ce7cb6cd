"""Holds ``skyward``'s events against the spec pages, so the public API cannot drift.

The pages are vendored beside this file; when the team's shared copy is present too,
the vendored copy must equal it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
import skyward

HERE = Path(__file__).parent
PAGE = (HERE / "events-api.txt").read_text()
FIELDS_PAGE = (HERE / "event-fields.md").read_text()
SHARED = HERE.parents[2] / "shared" / "spec"
MISSING = object()


def _page_signatures() -> dict[str, list[tuple[str, object]]]:
    """Each dataclass on the page with its ``__init__`` parameters (name, default)."""
    found: dict[str, list[tuple[str, object]]] = {}
    current = None
    for line in PAGE.splitlines():
        m = re.match(r"^skyward\.(\w+) dataclass$", line.strip())
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^__init__\((.*)\)$", line.strip())
        if m and current:
            params = []
            for part in [p.strip() for p in m.group(1).split(",") if p.strip()]:
                name, eq, default = part.partition("=")
                params.append((name, eval(default) if eq else MISSING))  # noqa: S307 - literal defaults
            found[current] = params
            current = None
    return found


def _table_signatures() -> dict[str, list[tuple[str, object]]]:
    found = {}
    for line in FIELDS_PAGE.splitlines():
        m = re.match(r"^\| (\w+) \| (.+) \|$", line)
        if not m or m.group(1) in ("event",):
            continue
        params = []
        for part in re.split(r",\s*(?![^\[]*\])", m.group(2)):
            part = part.replace("\\|", "|").strip()
            head, eq, default = part.partition("=")
            name = head.split(":")[0].strip()
            params.append((name, eval(default.strip()) if eq else MISSING))  # noqa: S307
        found[m.group(1)] = params
    return found


SIGNATURES = {**_page_signatures(), **_table_signatures()}


def _union(name: str) -> set[str]:
    m = re.search(rf"^skyward\.{name} = (.+)$", PAGE, re.M)
    assert m, name
    return {part.strip() for part in m.group(1).split("|")}


def test_vendored_pages_match_shared():
    if not SHARED.exists():
        pytest.skip("the shared spec folder is not beside this checkout")
    assert (SHARED / "events-api.txt").read_text() == PAGE
    assert (SHARED / "event-fields.md").read_text() == FIELDS_PAGE


def test_every_event_is_described():
    members = _union("Request") | _union("Fact")
    assert members - set(SIGNATURES) == set()
    assert len(SIGNATURES) >= 24


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_fields_order_and_defaults(name):
    cls = getattr(skyward, name)
    assert dataclasses.is_dataclass(cls)
    params = [
        (f.name, f.default if f.default is not dataclasses.MISSING else MISSING)
        for f in dataclasses.fields(cls)
    ]
    assert params == SIGNATURES[name]
    assert cls.__dataclass_params__.frozen
    assert hasattr(cls, "__slots__")


@pytest.mark.parametrize("union", ["Request", "Fact"])
def test_unions(union):
    members = {t.__name__ for t in typing.get_args(getattr(skyward, union))}
    assert members == _union(union)


def test_event_union_and_isinstance():
    assert set(typing.get_args(skyward.Event)) == set(typing.get_args(skyward.Request)) | set(
        typing.get_args(skyward.Fact)
    )
    assert isinstance(skyward.ClusterDestroyed("c"), skyward.Fact)
    assert not isinstance(skyward.ShutdownRequested("c"), skyward.Fact)
    assert isinstance(skyward.ShutdownRequested("c"), skyward.Event)


def test_aliases():
    assert skyward.RequestId is str and skyward.ClusterId is str
    assert skyward.InstanceId is str and skyward.NodeId is int
    assert set(typing.get_args(skyward.ProviderName)) == {
        "aws",
        "gcp",
        "vastai",
        "verda",
        "runpod",
        "container",
    }


def test_exports_are_exactly_the_page_and_the_extension_hooks():
    page_names = set(re.findall(r"^skyward\.(\w+)", PAGE, re.M))
    # Beyond the page: the extension hooks, and what remote cells call on an instance.
    extras = {"load_ipython_extension", "unload_ipython_extension", "metric", "node"}
    assert set(skyward.__all__) == page_names | set(SIGNATURES) | extras
    public = {
        n
        for n in dir(skyward)
        if not n.startswith("_") and not inspect.ismodule(getattr(skyward, n))
    }
    assert public == set(skyward.__all__)


def test_match_and_equality():
    a = skyward.Error("r1", "boom", fatal=True)
    assert a == skyward.Error("r1", "boom", True) and hash(a) == hash(
        skyward.Error("r1", "boom", True)
    )
    match a:
        case skyward.Error(message=m, fatal=True):
            assert m == "boom"
        case _:
            pytest.fail("match failed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.message = "x"  # type: ignore[misc]
