"""cnn-tune: Optuna hyperparameter search for a PyTorch CNN on MNIST, kept in one study database."""

__version__ = "0.4.0"
