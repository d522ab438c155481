"""What the node and the controller both use: MQTT link, IDL, Thrift mappings, files, decoding.

Imports ``pepi_fleet.schemas`` and nothing of ``pepi_fleet.node`` or ``pepi_fleet.controller``.
"""
