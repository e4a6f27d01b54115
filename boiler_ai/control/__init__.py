"""The controller core: validation, observation, policy, envelope, projector, guard, engagement.

Pure code: no sockets, no threads, no clock reads it is not handed. The daemon wires it to the plant.
"""
