"""Scaling out: simulation in Ray worker processes (``ray_workers``, ``ray_vec_env``). Imported only when a
command asks for workers, so the single-process path never loads Ray."""
