"""Data utilities: Gecko input formatting, length buckets, readers, label noise."""
