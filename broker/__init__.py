"""Broker configuration (production files) and the embedded mosquitto used by the demo and tests."""
