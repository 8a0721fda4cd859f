"""Is an artifact fit to ship? Drift against the fp32 reference, latency, reports and gates."""
