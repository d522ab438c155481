"""pepi-fleet: synchronised multi-camera capture for Raspberry Pi rigs (MQTT trigger, PEPI Thrift).

One import name for the whole distribution. ``pepi_fleet.schemas`` holds the contracts,
``pepi_fleet.core`` the pieces both ends share, ``pepi_fleet.node`` the agent on each Pi and
``pepi_fleet.controller`` the controller; ``pepi_fleet.broker`` the mosquitto configuration.
"""

__version__ = "0.1.0"
