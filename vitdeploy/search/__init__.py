"""Sparsity search: the space, the latency table on a backend, fidelity, the optimizer, the job.

Sits on top with jobs/cli: it uses models, export and engines (bench protocol, runners)."""
