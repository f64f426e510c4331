"""Machine-checked proofs of the paper's claims (see proofs/README.md); collected by pytest."""
