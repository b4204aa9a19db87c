"""Datasets loaded like `keras.datasets.*`: digits is bundled, reviews (word ids) generated; mnist, fashion_mnist, imdb and iris
download once (checked against their checksums) into ~/.kgraph/datasets or $KGRAPH_DATA_DIR."""

from kgraph.datasets import digits, fashion_mnist, imdb, iris, mnist, reviews

__all__ = ["digits", "mnist", "fashion_mnist", "iris", "imdb", "reviews"]
