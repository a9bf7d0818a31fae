"""The local-run harness: the demo, the local stack it runs on, child processes, and load.

Nothing here is part of the product a cluster runs; ``promgate demo``, the end-to-end
tests and the benchmarks use it to stand up Prometheus, example services and a sidecar on
one machine.
"""
