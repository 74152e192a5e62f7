"""The Transformer policy: network, normalisation, checkpoints and the predict-protocol wrapper."""
