"""A remote cell is an IPython cell: each cell run locally and on one node, compared
message type by message type and text by text (addresses, timings and the cell's file
name masked). Through a real kernel and a real node."""

from __future__ import annotations

import re
import struct
import time

import pytest

from .kernel import ANSI, cluster

pytestmark = pytest.mark.slow

CELLS = [
    "1+1 ;  # comment",
    "x = 5\nx",
    "list(range(30))",
    "{'b': list(range(12)), 'a': 'x' * 50}",
    "import numpy as np\nnp.arange(12).reshape(3, 4)",
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\n"
    "ax.set_title('x');",
    "fig",
    "plt.plot([3, 1, 2])",
    "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))",
    "y = !echo there\ny",
    "%timeit -n1 -r1 pass",
    "%%time\nsum(range(10))",
    "class H:\n    def _repr_html_(self):\n        return '<i>h</i>'\nH()",
    "import warnings\nwarnings.warn('careful')",
    "import logging\nlogging.warning('logged')",
    "from tqdm import tqdm\nfor _ in tqdm(range(3)):\n    pass",
    "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')",
    "def f():\n    return 1 / 0\nf()",
    "x = (",
    "%env SKYWARD_FIDELITY=1",
]

MASKS = [
    (
        re.compile(r"/tmp/ipykernel_\d+/\d+\.py|\b\d{6,}\.py|<ipython-input-\d+-[0-9a-f]+>"),
        "<cell>",
    ),
    (re.compile(r"0x[0-9a-f]+"), "0x…"),
    (re.compile(r"[\d.]+(?:e[+-]?\d+)?\s*(?:ns|µs|μs|us|ms|s)\b"), "T"),
    (re.compile(r"Cell In\[\d+\]"), "Cell In[N]"),
    # the lines of context around a frame: the node's IPython shows one fewer before
    (re.compile(r"^ {6}\d+ .*\n", re.MULTILINE), ""),
    (re.compile(r"[\d.?]+(?:it/s|s/it)"), "R"),
    (re.compile(r"\d\d:\d\d"), "M:S"),
]


def _screen(text: str) -> str:
    """What a frontend shows: each line after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def _png_size(b64: str) -> tuple[int, int]:
    import base64

    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG")
    return struct.unpack(">II", data[16:24])


def outputs(result) -> list[tuple]:
    """The cell's outputs as a frontend keeps them (streams of one name merged, what a
    carriage return leaves), masked; ``In[N]`` of the cell itself reads ``In[own]``."""
    own = result.reply["content"]["execution_count"]
    out: list[tuple] = []
    for _, msg in result.messages:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if out and out[-1][:2] == ("stream", content["name"]):
                out[-1] = ("stream", content["name"], out[-1][2] + content["text"])
            else:
                out.append(("stream", content["name"], content["text"]))
        elif kind in ("display_data", "execute_result"):
            shown = {
                mime: _png_size(value) if mime == "image/png" else _mask(str(value))
                for mime, value in content["data"].items()
            }
            count = content.get("execution_count")
            out.append((kind, "own" if count == own else count, shown))
        elif kind == "error":
            text = ANSI.sub("", "\n".join(content["traceback"]))
            out.append(("error", content["ename"], _mask(content["evalue"]), _mask(text)))
    return [("stream", o[1], _mask(_screen(o[2]))) if o[0] == "stream" else o for o in out]


@pytest.fixture(scope="module")
def kernel():
    with cluster("--provider container --pip matplotlib numpy tqdm") as k:
        yield k


def test_shell_commands_print_on_the_node(kernel):
    # (a local kernel started by jupyter_client prints `!cmd` output to its own terminal)
    result = kernel.execute("%%skyward run\n!echo hi")
    assert result.ok and result.streams() == [("stdout", "hi\n")]


def test_cells_show_the_same_locally_and_remotely(kernel):
    mismatches = []
    timings = []
    for body in CELLS:
        magic = body.startswith("%%")
        # A comment stands for the remote cell's `%%skyward run` line (same line numbers).
        started = time.monotonic()
        local = kernel.execute(body if magic else "# %%skyward run\n" + body)
        timings.append(time.monotonic() - started)
        started = time.monotonic()
        remote = kernel.execute("%%skyward run\n" + body, timeout=120)
        timings.append(time.monotonic() - started)
        expected, got = outputs(local), outputs(remote)
        if local.ok != remote.ok or expected != got:
            mismatches.append((body, expected, got))
    assert not mismatches, "\n\n".join(
        f"{b!r}:\n local  {e}\n remote {g}" for b, e, g in mismatches
    )
