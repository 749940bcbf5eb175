"""Training a NiN with Lightning: the LightningModule, optimisers, metrics, callbacks, checkpoint IO, LightningCLI."""
