"""Long-term memory: durable, searchable memories per namespace (see long_term.py)."""
