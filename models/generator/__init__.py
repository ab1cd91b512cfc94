"""G, the multi-view generator: the camera-conditioned UNet, its camera embedding, the training objective, the noise schedule's algebra and the weights' moving average."""
