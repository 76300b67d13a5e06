"""Foundation helpers every layer above may use: content digests, module modes and pass counting,
process groups, seeding and devices, signals, memory. Nothing here imports another advbench package
except :mod:`advbench.errors`, :mod:`advbench.registry`, :mod:`advbench.threat` and :mod:`advbench.runs`."""
