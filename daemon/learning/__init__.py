"""Learning online: ratings from JetStream, the prober, the evolver driver."""
