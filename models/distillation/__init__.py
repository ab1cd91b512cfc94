"""Multi-view score distillation (paper 5.2): 3D Gaussians optimised under a frozen G's prior."""
