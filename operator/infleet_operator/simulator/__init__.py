"""Discrete-event fleet simulator: replay a trace through an autoscaling policy."""
