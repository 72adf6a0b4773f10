"""Monitoring (DMLS ch. 8): drift tests, reference profiles, reports."""
