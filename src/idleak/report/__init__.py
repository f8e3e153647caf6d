"""Presentation: plots and self-contained HTML reports (images embedded as data URIs)."""
