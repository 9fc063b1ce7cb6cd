"""A ledger that survives damage: nothing it could still read is lost, nothing is
overwritten, the user is told; and each write is 0600 from creation, fsynced, atomic."""

from __future__ import annotations

import json
import os
import stat

import pytest
from skyward.core import private_files
from skyward.core.ledger import Ledger
from skyward.model import ClusterSpec


def _ledger_with(path, count: int, **fields) -> tuple[Ledger, list[str]]:
    ledger = Ledger(path)
    keys = []
    for node in range(count):
        key = ledger.begin("aws", "sky-0000abcd", node, ClusterSpec("aws"), **fields)
        ledger.update(key, instance_id=f"i-{node:017x}")
        keys.append(key)
    return ledger, keys


def _aside(folder) -> list:
    return sorted(folder.glob("ledger.json.corrupt-*"))


def test_a_truncated_ledger_is_kept_aside_and_what_parses_restored(tmp_path):
    path = tmp_path / "ledger.json"
    _, keys = _ledger_with(path, 3)
    damaged = path.read_bytes()[:-5]  # cut short, as by a full disk
    path.write_bytes(damaged)
    ledger = Ledger(path)
    entries = ledger.entries()
    # The last entry lost its end: the first two come back whole, the third is named.
    assert [e.key for e in entries] == keys[:2]
    assert [e.instance_id for e in entries] == ["i-" + "0" * 17, "i-" + "0" * 16 + "1"]
    [kept] = _aside(tmp_path)
    assert kept.read_bytes() == damaged  # never overwritten
    assert json.loads(path.read_bytes()).keys() == set(keys[:2])
    [line] = ledger.notices()
    assert "\n" not in line and str(kept) in line and "does not parse" in line
    assert "restored 2 entries (i-00000000000000000, i-00000000000000001)" in line
    assert "check by hand" in line and "i-00000000000000002" in line
    assert Ledger(path).entries() == entries  # the next reader finds a sound ledger
    assert len(_aside(tmp_path)) == 1


def test_damage_in_the_middle_still_restores_the_entries_after_it(tmp_path):
    path = tmp_path / "ledger.json"
    _, keys = _ledger_with(path, 3)
    text = path.read_text()
    middle = text.index(f'"{keys[1]}": {{')
    path.write_text(text[: middle + 30] + "\x00garbage" + text[middle + 40 :])
    ledger = Ledger(path)
    assert {e.key for e in ledger.entries()} == {keys[0], keys[2]}
    [line] = ledger.notices()
    assert "restored 2 entries" in line and "i-00000000000000001" in line


def test_a_file_that_is_no_ledger_at_all_is_kept_and_reported(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_bytes(b"\x89PNG not json")
    ledger = Ledger(path)
    assert ledger.entries() == []
    [kept] = _aside(tmp_path)
    assert kept.read_bytes() == b"\x89PNG not json"
    assert "no entry could be restored" in ledger.notices()[0]
    key = ledger.begin("aws", "sky-1", 0, ClusterSpec("aws"))  # the ledger works again
    assert [e.key for e in ledger.entries()] == [key]
    assert kept.read_bytes() == b"\x89PNG not json"


def test_two_damaged_files_in_the_same_second_are_both_kept(tmp_path):
    path = tmp_path / "ledger.json"
    for text in ("{", "[1, 2"):
        path.write_text(text)
        Ledger(path).entries()
    assert sorted(p.read_text() for p in _aside(tmp_path)) == ["[1, 2", "{"]


def test_unknown_fields_are_kept_in_the_file_and_ignored(tmp_path):
    path = tmp_path / "ledger.json"
    _, [key] = _ledger_with(path, 1)
    stored = json.loads(path.read_text())
    stored[key]["volume_ids"] = ["vol-1"]  # what a newer version may record
    path.write_text(json.dumps(stored))
    ledger = Ledger(path)
    [entry] = ledger.entries()
    assert (entry.key, entry.instance_id) == (key, "i-" + "0" * 17)
    ledger.update(key, ip="203.0.113.7")
    ledger.begin("aws", "sky-2", 0, ClusterSpec("aws"))
    assert json.loads(path.read_text())[key]["volume_ids"] == ["vol-1"]
    assert ledger.notices() == [] and _aside(tmp_path) == []


def test_an_entry_this_version_cannot_read_is_kept_and_reported(tmp_path):
    path = tmp_path / "ledger.json"
    _, [key] = _ledger_with(path, 1)
    stored = json.loads(path.read_text())
    stored["sky-9/0/abcdef"] = {"key": "sky-9/0/abcdef", "node": "zero"}
    path.write_text(json.dumps(stored))
    ledger = Ledger(path)
    assert [e.key for e in ledger.entries()] == [key]
    ledger.remove(key)
    assert list(json.loads(path.read_text())) == ["sky-9/0/abcdef"]
    [line] = ledger.notices()
    assert "1 ledger entry this version cannot read" in line and "sky-9/0/abcdef" in line


def test_writes_are_private_from_creation_fsynced_then_renamed(tmp_path, monkeypatch):
    steps: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
        steps.append((f"fsync {kind}", stat.S_IMODE(info.st_mode)))
        real_fsync(fd)

    def replace(source, target) -> None:
        steps.append(("replace", os.path.basename(target)))
        real_replace(source, target)

    monkeypatch.setattr(private_files.os, "fsync", fsync)
    monkeypatch.setattr(private_files.os, "replace", replace)
    old = os.umask(0)  # the mode must not depend on the login umask
    try:
        Ledger(tmp_path / "ledger.json").begin("aws", "sky-1", 0, ClusterSpec("aws"))
    finally:
        os.umask(old)
    assert steps == [("fsync file", 0o600), ("replace", "ledger.json"), ("fsync folder", 0o700)]
    assert stat.S_IMODE(os.stat(tmp_path / "ledger.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ledger.lock").st_mode) == 0o600
    assert not list(tmp_path.glob(".ledger.json.*"))  # no temporary file left


def test_the_ledger_folder_and_its_missing_parents_are_0700(tmp_path):
    old = os.umask(0o022)
    try:
        Ledger(tmp_path / "a" / "skyward" / "ledger.json").entries()
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "skyward"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder


def test_a_damaged_file_that_cannot_be_kept_aside_is_not_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "ledger.json"
    path.write_text('{"sky-1/0/aa": {"key": "sky-1/0/aa"')

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    ledger = Ledger(path)
    with pytest.raises(Exception, match="cannot keep the damaged ledger"):
        ledger.begin("aws", "sky-2", 0, ClusterSpec("aws"))
    assert path.read_text() == '{"sky-1/0/aa": {"key": "sky-1/0/aa"'
    assert "cannot read the ledger" in ledger.check()[-1]


def test_every_field_of_a_record_is_type_checked_when_read():
    from dataclasses import fields

    from skyward.core.ledger_entries import _CLUSTER_TYPES, _TYPES, ClusterEntry, LedgerEntry

    assert set(_TYPES) == {f.name for f in fields(LedgerEntry)}
    assert set(_CLUSTER_TYPES) == {f.name for f in fields(ClusterEntry)}
