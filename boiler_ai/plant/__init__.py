"""The plant room: the PlantIO interface, tag maps, and (in opcua.py only) the OPC UA adapter.

Importing this package must not import the OPC UA library: the controller core and the tools use
the types and the tag map without a network stack.
"""

from boiler_ai.plant.tagmap import SignalSpec, TagMap, load_tag_map
from boiler_ai.plant.types import PlantIO, Quality, Reading, Snapshot, WriteResult

__all__ = ["PlantIO", "Quality", "Reading", "SignalSpec", "Snapshot", "TagMap", "WriteResult", "load_tag_map"]
