"""What the up cell says about package sync, and the hint under a missing module."""

from __future__ import annotations

import six
from skyward.jupyter.envsync import hint, summary
from skyward.transport.package_sync import SyncReport


def test_hint_names_the_distribution_the_version_and_why_it_was_skipped():
    text = hint("No module named 'six.moves'", {"six": "not on the node's package index"}, True)
    assert text == (
        f"the kernel has six {six.__version__}; package sync skipped it (not on the node's "
        f"package index): %skyward up --pip six=={six.__version__}"
    )
    assert "sync was off" in hint("No module named 'six'", {}, False)
    assert hint("No module named 'not_here_anywhere'", {}, True) is None


def test_summary_is_one_line_naming_each_skip_once():
    reports = [
        SyncReport(3, 2, [("a==1", "no build for the node's platform")], seconds=1.5),
        SyncReport(3, 2, [("a==1", "no build for the node's platform")], seconds=2.0),
    ]
    line = summary(reports, ["jupyterlab"])
    assert "\n" not in line and line.count("a==1") == 1
    assert "on 2 node(s) in 2.0 s" in line and "left behind (frontend only): jupyterlab" in line
