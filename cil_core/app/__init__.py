"""The application layer: the ``cil`` command line, run configurations, the demo, the capability
table and sweeps. It sits above the facade; nothing in the library imports it."""
