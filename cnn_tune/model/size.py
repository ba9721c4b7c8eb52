"""How big a configuration's network is, worked out from its record alone — torch-free, so the
parent of worker processes can check a warm start against ``--max-params`` without loading torch.
tests/test_space_wide.py checks every formula against the parameters of the built network."""

from __future__ import annotations

from cnn_tune.model.space import Hyperparams, Space, WideHyperparams


def n_params(hp: Space, n_classes: int = 10) -> int:
    """Trainable parameters of ``hp``'s network with ``n_classes`` outputs (batch norm's running
    statistics are buffers, not parameters)."""
    if isinstance(hp, WideHyperparams):
        total, channels, size = 0, 1, 28
        for block in range(hp.blocks):
            out = hp.width * 2**block
            total += 9 * channels * out + (2 * out if hp.batch_norm else out)  # 3×3 weights; BN's γ, β or a bias
            channels, size = out, size // 2
        features = channels * size * size
    else:
        assert isinstance(hp, Hyperparams)
        total = (25 * 1 * 16 + 16) + (25 * 16 * 32 + 32)  # conv 5×5 1→16, 16→32, with biases
        features = 32 * 7 * 7
    hidden = hp.fc2_input_dim
    return total + (features * hidden + hidden) + (hidden * n_classes + n_classes)
