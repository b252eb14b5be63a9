"""The course's demo code: its sample data (``data``), the Embedding+MLP in three forms
(``models``) and the demo training of a converted Keras model (``train``). The product
(rewrite, validate, serve) does not depend on it."""
