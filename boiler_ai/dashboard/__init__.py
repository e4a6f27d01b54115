"""The operator's live view of a unit's decisions (`boiler-ai dashboard`): the `dashboard` extra, never
imported by the daemon."""
