"""Ray Train: the driver (placement, the TorchTrainer, MLflow), the worker side, and the two trainers (G and the reconstructor)."""
