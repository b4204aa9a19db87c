"""TensorFlow's "basic classification" tutorial: Fashion-MNIST with a Flatten-Dense-Dense model,
trained with kgraph. The tutorial's published Keras run reports a test accuracy of about 0.88
after 10 epochs for this model; this script prints its own beside that figure (a citation, not a
run of Keras here: tools/fashion_mnist_vs_keras.py trains both on the same data).

Replaces (TensorFlow):
    (train_images, train_labels), (test_images, test_labels) = tf.keras.datasets.fashion_mnist.load_data()
    model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(28, 28)),
                                 tf.keras.layers.Dense(128, activation='relu'),
                                 tf.keras.layers.Dense(10)])
    model.compile(optimizer='adam',
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])
    model.fit(train_images, train_labels, epochs=10)
    test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)
The model is examples/fashion_mnist.json. The data downloads once into ~/.kgraph/datasets.

    python examples/fashion_mnist_classification.py
"""

import os
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"
EPOCHS = 1 if SMALL else 10
KERAS_TEST_ACCURACY = 0.88  # the figure TensorFlow's tutorial publishes for this model after 10 epochs

(train_images, train_labels), (test_images, test_labels) = kgraph.datasets.fashion_mnist.load_data()
train_images, test_images = train_images / 255.0, test_images / 255.0
class_names = kgraph.datasets.fashion_mnist.CLASS_NAMES

model = kgraph.models.load_model(Path(__file__).with_name("fashion_mnist.json"), seed=0)
model.compile(
    optimizer="adam", loss=kgraph.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
model.fit(train_images, train_labels, epochs=EPOCHS, verbose=2)

test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)
print(f"Test accuracy: {test_acc:.4f} after {EPOCHS} epochs")
print(f"Keras's tutorial publishes about {KERAS_TEST_ACCURACY} for this model after 10 epochs (not a run here)")

logits = model.predict(test_images[:5], verbose=0)
probabilities = np.exp(logits - logits.max(-1, keepdims=True))
probabilities /= probabilities.sum(-1, keepdims=True)
for p, label in zip(probabilities, test_labels[:5]):
    print(f"predicted {class_names[p.argmax()]:<12} ({p.max():.0%}), true {class_names[label]}")
