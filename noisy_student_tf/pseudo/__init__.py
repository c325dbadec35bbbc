"""Offline pseudo-labels: prediction shards, filter-and-balance (upstream sections 8 and 9)."""
