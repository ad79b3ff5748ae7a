"""Layer 2: model families, one file each (causal LM today; VAE, GAN and diffusion next)."""
