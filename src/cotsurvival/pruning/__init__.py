"""Greedy survival pruning: exact deletion order and per-step cost traces."""
