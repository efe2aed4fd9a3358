"""Motion Map Injection: attention-vs-motion similarity (:mod:`.similarity`) and the injecting attention
controller (:mod:`.inject`). Import those modules directly; this package imports nothing, so that checking a
config (:mod:`.methods`) does not import torch."""
