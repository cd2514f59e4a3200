"""Tests that start a real (one-node) SLURM cluster on this machine."""
