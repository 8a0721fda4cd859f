"""Per-layer views of an artifact inside its runtime: where its time goes (profiles) and where its
numbers part from the fp32 model (numerics). The runtimes' own parts live with their targets
(conversion/*_ops.py); this package holds what is common: the records, the source model's layers
the runtime ops map back to, the peak throughput they are measured against, and the reports."""
