"""The fault kinds the simulator can plant (``sdc.sim.fleet``), apart so ``sdc simulate --help``
lists them without importing numpy."""

FAULT_KINDS = ("persistent", "intermittent", "slow", "slow5", "degrading", "nondeterministic", "unreliable")
