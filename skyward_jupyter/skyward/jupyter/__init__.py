"""The Jupyter layer: the ``%skyward`` magics and what they show. It consumes events and
calls the pool; it never reaches into providers or transport."""
