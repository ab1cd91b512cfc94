"""Meshes from 3D Gaussians: depth fusion (TSDF, marching cubes), texture baking, glTF export."""
