"""skyward: cloud GPUs from a notebook.

``%load_ext skyward`` loads the magics; the names exported here are the event vocabulary
of ``spec/events-api.txt``. The Jupyter layer is imported only when the extension loads,
so ``import skyward`` stays instant (and works on an instance, where the agent uses it).
"""

from . import events
from .events import *  # noqa: F403 - the page's vocabulary, listed once, in events.__all__
from .remote import metric, node

__version__ = "0.1.0"

__all__ = ["load_ipython_extension", "metric", "node", "unload_ipython_extension"]
__all__ += events.__all__


def load_ipython_extension(ipython: object) -> None:
    """Register the ``%skyward`` magics (``%load_ext skyward``)."""
    from .jupyter.extension import load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """Destroy this kernel's clusters and remove the magics (``%unload_ext skyward``)."""
    from .jupyter.extension import unload

    unload(ipython)
