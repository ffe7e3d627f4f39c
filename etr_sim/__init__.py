"""etr-sim: a discrete-event cluster simulator for MoE expert-parallel all-to-all.

Stages (each a package, data flows one way):
config -> activations -> routing -> traffic -> topology/sim -> metrics -> report.
"""

__version__ = "0.1.0"
