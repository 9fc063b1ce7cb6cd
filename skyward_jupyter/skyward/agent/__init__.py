"""What runs on an instance: a supervisor (standard library only) and its worker.

The supervisor (``python -m skyward.agent``) owns the socket the kernel reaches over SSH,
the numbered frames and their replay, the heartbeat and the dead-kernel shutdown; the
worker (``skyward.agent.worker``) holds the namespace and runs cells with IPython. The
bootstrap uploads this package, so it always matches the kernel's version.
"""
