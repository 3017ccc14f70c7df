"""Storage: the NATS connection, JetStream streams, the recipe KV store, the experience index."""
