"""SSH transport, the bootstrap of instances, and the client side of the agent protocol."""
