//! faultline-scenarios: the supervisor's world on the simulator.
