"""Training a NiN with Lightning: the LightningModule, optimisers, metrics, callbacks, checkpoint IO, LightningCLI."""

__all__ = ["SUBCOMMANDS"]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""The ``ninlab`` subcommands LightningCLI runs (:mod:`ninlab.training.lightning_cli`). Defined here, where the
command line's dispatch reads it without importing Lightning."""
