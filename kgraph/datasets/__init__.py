"""Datasets loaded like `keras.datasets.*`: digits is bundled; mnist, fashion_mnist, imdb and iris
download once (checked against their checksums) into ~/.kgraph/datasets or $KGRAPH_DATA_DIR."""

from kgraph.datasets import digits, fashion_mnist, imdb, iris, mnist

__all__ = ["digits", "mnist", "fashion_mnist", "iris", "imdb"]
