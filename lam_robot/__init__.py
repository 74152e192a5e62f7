"""lam-robot: record demonstrations, behaviour-clone a Transformer, fine-tune with PPO, evaluate."""

__version__ = "0.1.0"
