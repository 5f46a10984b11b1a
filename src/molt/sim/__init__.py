"""In-memory cluster and cloud on a virtual clock, driving the production reconcilers."""
