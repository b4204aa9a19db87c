"""TensorFlow's Iris walkthrough (premade-estimator and custom-training guides): a 4-10-10-3 MLP
on the Iris CSV files, fed from a shuffled, batched Dataset, with kgraph.

Replaces (TensorFlow):
    train_path = tf.keras.utils.get_file("iris_training.csv", TRAIN_URL)   # and iris_test.csv
    train = pd.read_csv(train_path, names=CSV_COLUMN_NAMES, header=0); ...
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(1000).repeat().batch(32)
    model = tf.keras.Sequential([tf.keras.layers.Dense(10, activation=tf.nn.relu, input_shape=(4,)),
                                 tf.keras.layers.Dense(10, activation=tf.nn.relu),
                                 tf.keras.layers.Dense(3)])
The model is examples/iris.json.

    python examples/iris_classification.py
"""

import os
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"
EPOCHS = 5 if SMALL else 100

(x_train, y_train), (x_test, y_test) = kgraph.datasets.iris.load_data()
train = kgraph.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1000, seed=0).repeat().batch(32)
test = kgraph.data.Dataset.from_tensor_slices((x_test, y_test)).batch(32)

model = kgraph.models.load_model(Path(__file__).with_name("iris.json"), seed=0)
model.compile(
    optimizer=kgraph.optimizers.SGD(learning_rate=0.01),
    loss=kgraph.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(train, epochs=EPOCHS, steps_per_epoch=len(x_train) // 32, verbose=2 if SMALL else 0)

loss, accuracy = model.evaluate(test, verbose=0)
print(f"Test set accuracy: {accuracy:.3f} (loss {loss:.4f})")
species = kgraph.datasets.iris.SPECIES
flowers = np.array([[5.1, 3.3, 1.7, 0.5], [5.9, 3.0, 4.2, 1.5], [6.9, 3.1, 5.4, 2.1]], np.float32)
for logits in model.predict(flowers, verbose=0):
    print(f"Prediction is {species[logits.argmax()]}")
