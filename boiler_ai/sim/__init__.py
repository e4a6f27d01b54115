"""The simulated reference unit: physics, DCS emulation, scenarios, its OPC UA server, the efficiency calculator."""
