"""The termination pipeline: select nodes under policies and budgets, then take each one
through replacement, cordon, preDrain actions, drain, preTerminate actions and termination."""
