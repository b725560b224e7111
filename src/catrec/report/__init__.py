"""Reporting: tidy summaries (``collect``), Tables 1-2 (``tables``) and the figures (``plots``)."""
