"""User-facing schemas, loading and cross-field checks. Imports neither torch nor simpy."""

from etr_sim.config.load import LoadedScenario, load_scenario, load_scenario_dict, load_topology
from etr_sim.config.scenario import Scenario
from etr_sim.config.topology import TopologySpec

__all__ = ["LoadedScenario", "Scenario", "TopologySpec", "load_scenario", "load_scenario_dict", "load_topology"]
