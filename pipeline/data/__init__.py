"""The data path: asset sources, the shard schema, shard IO, and the Ray Data datasets that decode shards for training."""
