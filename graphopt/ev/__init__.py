"""The EmbeddingVariable contract (``contract``): what every part that builds, reads or stores a
graphopt table agrees on."""
