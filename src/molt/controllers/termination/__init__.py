"""The termination pipeline: select nodes under policies and budgets, then take each one
through cordon, pre-termination actions, replacement, drain and termination."""
