"""The proxy task, the Optuna controller and ``nas-search``."""
import os

# Busy-waiting OpenMP threads cost up to 10x when the CPU is shared (README, "The proxy task");
# it must be set before torch loads, and the console scripts import this package first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
