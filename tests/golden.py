"""The golden regression input/output for the Transformer policy network.

Regenerate (only after an intended change to the network) with:

    .venv/bin/python -m tests.golden

and commit tests/data/golden_transformer.json with a note on why the outputs moved.
"""

import json
from pathlib import Path

import torch

from lam_robot.policy.network import TransformerConfig, TransformerPolicyNet

GOLDEN = Path(__file__).parent / "data" / "golden_transformer.json"
CONFIG = TransformerConfig(obs_dim=6, act_dim=2, context=4, d_model=16, n_layers=2, n_heads=2, dropout=0.0)


def golden_input() -> tuple[torch.Tensor, torch.Tensor]:
    obs = torch.linspace(-2.0, 2.0, 2 * 4 * 6).reshape(2, 4, 6).sin()
    valid = torch.tensor([[True, True, True, True], [False, False, True, True]])
    return obs, valid


def golden_output() -> dict[str, list]:
    """Action means and the features under them (the means alone are small at initialisation)."""
    torch.manual_seed(1234)
    net = TransformerPolicyNet(CONFIG).eval()
    with torch.no_grad():
        obs, valid = golden_input()
        return {"mean": net(obs, valid).tolist(), "features": net.features(obs, valid)[:, :, :4].tolist(),
                "log_std": net.log_std.tolist()}


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({"torch": torch.__version__, **golden_output()}) + "\n")
    print(f"wrote {GOLDEN}")
