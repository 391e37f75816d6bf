"""The driver: builds the roles, runs the RL step, evaluates, logs."""
