"""Bridges from other tuning libraries to tuneloop's methods (Optuna: `tuneloop.integrations.optuna`)."""
