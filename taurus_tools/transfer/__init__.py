"""The parallel copy: listing, planning into shards, the per-shard worker, state, endpoints, staging."""
