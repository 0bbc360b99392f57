"""``regulator fleet``: N simulated chips as Ray actors, each with its own mismatch
seed, environment, shift schedule, policy overrides and state directory.

- :mod:`regulator.fleet.config`: the fleet file and each device's merged policy
- :mod:`regulator.fleet.device`: one device's runtime and loop on a simulated clock
- :mod:`regulator.fleet.actor`: a device as a Ray actor
- :mod:`regulator.fleet.supervisor`: start, drive in rounds, restart dead actors
- :mod:`regulator.fleet.targets`: Prometheus ``file_sd`` targets, one per device
- :mod:`regulator.fleet.command`: the command line's entry points

Ray is the optional ``fleet`` extra; only the supervisor and the actor import it.
"""
