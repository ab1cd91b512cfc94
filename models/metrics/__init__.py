"""Image and multi-view metrics: PSNR/SSIM, LPIPS, RAFT flow warping error, CLIP score, and the scores built from them."""
