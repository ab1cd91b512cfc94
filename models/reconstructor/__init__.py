"""The reconstructor (LGM): views + cameras -> Gaussians; its options, UNet, rays, loss and training step."""
