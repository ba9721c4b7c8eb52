"""cnn-tune: Optuna hyperparameter search for a PyTorch CNN on MNIST, Fashion-MNIST or your own images, kept in one
study database."""

__version__ = "0.8.0"
