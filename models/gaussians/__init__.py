"""3D Gaussians: the container, rendering (gsplat on CUDA, a PyTorch reference elsewhere), fitting to views, PLY files."""
