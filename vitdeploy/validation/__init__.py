"""How an artifact is judged: parity metrics, thresholds and verdicts (parity.py), the reference
outputs that travel with an export (reference_outputs.py) and the one latency protocol (latency.py).

Beside engines/ (which builds and runs artifacts): these modules take runners and arrays, never
build or load anything themselves. Orchestration (open an artifact, find its reference, pick a
backend) is vitdeploy/checks.py's, at the jobs level.
"""
