"""Validation: apply a candidate, restart, judge health, collect denials, relax what broke."""
