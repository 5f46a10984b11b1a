"""Run every benchmark and print its figures."""

from bench import plan_compute

if __name__ == "__main__":
    plan_compute.run()
