"""``python -m skyward.agent``: the supervisor."""

import os

from .supervisor import main

if __name__ == "__main__":
    os._exit(main())  # threads left behind must not keep the agent alive
