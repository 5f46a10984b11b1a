"""Run every benchmark and print its figures."""

from bench import (
    churn,
    controller_steady_state,
    drain_vs_kubectl,
    fleet_2000,
    plan_compute,
    rollout,
    rollout_sim,
    sim_speed,
)

if __name__ == "__main__":
    plan_compute.run()
    plan_compute.run_pods()
    controller_steady_state.run()
    sim_speed.run()
    rollout_sim.run()
    churn.run()
    rollout.run()
    drain_vs_kubectl.run()
    fleet_2000.run()
    fleet_2000.run_throughput()
