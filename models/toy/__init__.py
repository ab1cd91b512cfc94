"""Toy-scale builders (tiny models, the pixel VAE, the toy trainers): tests, the main job at toy scale and benchmarks only; production code never imports them."""
