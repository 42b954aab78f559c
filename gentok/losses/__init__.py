"""Training losses, one module per concern: reconstruction.py (pixel and perceptual terms), gan.py (the PatchGAN
adversary), audio.py (multi-resolution spectral terms), dna.py (MergeDNA's objectives). Import the module you need."""
