"""Attacks that train or optimise networks (torch, an optional extra); imported only when used."""
