"""The graph model of a TensorFlow model (graph + function library) and its I/O."""

from graphopt.graph.model import TOP, Body, CallEdge, ModelGraph, Place, TensorRef, Use

__all__ = ["TOP", "Body", "CallEdge", "ModelGraph", "Place", "TensorRef", "Use"]
