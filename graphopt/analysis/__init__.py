"""What a model's graph holds, read without changing it: used by rewrite and validate alike.

``tables`` (the embedding tables of a model and their lookup sites), ``training_updates`` (a
table's TF1 optimizer update) and ``id_chains`` (the id-mapping chain in front of each lookup).
"""
