"""Training: behaviour cloning (bc.py); PPO fine-tuning comes next."""
