"""infleet control plane: kopf operator, CRD rendering, autoscaling policies."""
