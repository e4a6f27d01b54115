"""The plant room: the PlantIO interface, tag maps, and the OPC UA client adapter and tag server.

Only opcua_client.py and opcua_server.py import the OPC UA library; importing this package does not,
so the controller core and the tools use the types and the tag map without a network stack.
"""

from boiler_ai.plant.tagmap import SignalSpec, TagMap, load_tag_map
from boiler_ai.plant.types import PlantIO, Quality, Reading, Snapshot, WriteResult

__all__ = ["PlantIO", "Quality", "Reading", "SignalSpec", "Snapshot", "TagMap", "WriteResult", "load_tag_map"]
