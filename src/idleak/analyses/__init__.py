"""Analyses: plain functions from embedded face sets to result objects (no model internals)."""
