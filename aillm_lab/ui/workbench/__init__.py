"""The Panel workbench served by ``aillm-lab serve`` and ``make demo``."""
