"""The pepi-fleet controller: presence, capture sets, loss-free retrieval, CLI."""
