"""boiler-ai: AI combustion optimisation for coal-fired utility boilers, beside the DCS."""

__version__ = "0.1.0"
