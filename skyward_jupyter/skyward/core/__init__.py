"""The UI-free asyncio core: the event bus, the cluster and node lifecycles, the provider
protocol. It never imports providers, transport or the Jupyter layer; those are handed in."""
