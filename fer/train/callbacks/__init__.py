"""Lightning callbacks a run's config switches on (conf/callbacks/): each takes what it needs as
arguments and imports nothing from the runner."""
