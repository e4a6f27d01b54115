"""The plant room: the PlantIO interface and its implementations (OPC UA client, stepped simulated unit),
tag maps, and the OPC UA tag server.

Only opcua_client.py and opcua_server.py import the OPC UA library; importing this package does not,
so the controller core and the tools use the tag map without a network stack.
"""

from boiler_ai.plant.types import PlantIO
from boiler_ai.tagmap import SignalSpec, TagMap, load_tag_map

__all__ = ["PlantIO", "SignalSpec", "TagMap", "load_tag_map"]
