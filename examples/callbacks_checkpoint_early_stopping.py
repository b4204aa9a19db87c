"""The Keras guide's callbacks: ModelCheckpoint, EarlyStopping and TensorBoard (when the optional
tensorboard package is installed: pip install 'kgraph[tensorboard]'), with kgraph.

Replaces (TensorFlow):
    callbacks = [tf.keras.callbacks.EarlyStopping(patience=2, monitor='val_loss'),
                 tf.keras.callbacks.ModelCheckpoint('ckpt/weights.{epoch:02d}.weights.h5',
                                                    save_weights_only=True, save_best_only=True),
                 tf.keras.callbacks.TensorBoard(log_dir='./logs')]
    model.fit(data, labels, batch_size=32, epochs=5, callbacks=callbacks,
              validation_data=(val_data, val_labels))

    python examples/callbacks_checkpoint_early_stopping.py [output folder]
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kgraph-callbacks-"))
out.mkdir(parents=True, exist_ok=True)

model = kgraph.models.load_model(Path(__file__).with_name("guide_mlp.json"), seed=0)
model.compile(optimizer=kgraph.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])

rng = np.random.default_rng(0)
data, labels = rng.random((1000, 32)), np.eye(10)[rng.integers(0, 10, 1000)]  # random one-hot labels
val_data, val_labels = rng.random((100, 32)), np.eye(10)[rng.integers(0, 10, 100)]

callbacks = [
    kgraph.callbacks.EarlyStopping(patience=2, monitor="val_loss"),
    kgraph.callbacks.ModelCheckpoint(
        str(out / "weights.{epoch:02d}.weights.h5"), save_weights_only=True, save_best_only=True, monitor="val_loss"
    ),
]
try:
    callbacks.append(kgraph.callbacks.TensorBoard(log_dir=str(out / "logs")))
except ImportError as e:
    print(f"(no TensorBoard logs: {e})")

history = model.fit(
    data,
    labels,
    batch_size=32,
    epochs=3 if SMALL else 50,
    callbacks=callbacks,
    validation_data=(val_data, val_labels),
    verbose=2,
)
print(f"trained {len(history.history['loss'])} epochs; early stopping watched val_loss")
print("checkpoints:", sorted(p.name for p in out.glob("*.weights.h5")))
