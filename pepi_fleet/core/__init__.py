"""What both ends use: MQTT link, IDL, Thrift mappings, files, decoding, the frame grid,
camera identity.

Imports ``pepi_fleet.schemas`` and nothing of ``pepi_fleet.node`` or ``pepi_fleet.controller``.
"""
