"""infleet data plane: Triton-compatible worker. Knows nothing of Kubernetes."""
