"""SimPy model: the flow network (link sharing), GPU processes and the MoE layer timeline. No torch."""
