"""Decision records: schema, durable log, publisher, catch-up service, historian, export.

The daemon's entry point is recorder.Recorder; the wire format is documented in docs/DECISION_RECORD.md.
"""
