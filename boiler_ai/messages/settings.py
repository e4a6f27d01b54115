"""Facts more than one room needs, defined once: the config, the log and the daemon read them here."""

from __future__ import annotations

# the daemon config's `mode`; observe: read, validate and record only, no model and no writes (a new unit)
CONTROL_MODES = ("observe", "shadow", "closed_loop")
FSYNC_POLICIES = ("every_record", "interval", "never")  # the durable log's `fsync`
# The durable log's defaults, in the config's units (the daemon config's `record:` section and the log
# itself both take them from here).
# Records the log may hold queued for its writer thread; one more is dropped (counted, and a seq gap).
# 2000 is over half an hour at one cycle a second, and bounds the queue's memory to tens of MB.
LOG_QUEUE_SIZE = 2000
LOG_FSYNC_INTERVAL_MS = 200
LOG_SEGMENT_MAX_MB = 64.0
LOG_SEGMENT_MAX_AGE_S = 3600.0
LOG_RETENTION_DAYS = 90.0
# Health of the log (not configurable yet): below this much free space the log says records are not
# durable, so the daemon hands control back while records still fit; a writer with records waiting
# and no progress for this long is stalled; a pass re-reading the whole log starts this often.
LOG_MIN_FREE_MB = 16.0
LOG_MAX_LAG_S = 3.0
LOG_SCRUB_INTERVAL_S = 600.0
