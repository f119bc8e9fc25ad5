"""The image-bytes serving signature shared by the demo model and the ResNet-50 benchmark model.

`serving_default` takes encoded images (tf.string [None]) and returns classes, probabilities and label
names, as the how-to's ResNet-50 does; each model brings its own in-graph `preprocess_one`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def image_bytes_module(
    model, *, label_names: Sequence[str], preprocess_one: Callable, image_shape: list[int]
):
    """Wrap a Keras model in a tf.Module whose `serve` decodes and preprocesses the images in the graph."""
    import tensorflow as tf

    class ImageBytesServing(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.label_names = tf.constant(list(label_names))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            images = tf.map_fn(
                preprocess_one, image_bytes, fn_output_signature=tf.TensorSpec(image_shape, tf.float32)
            )
            probabilities = tf.cast(self.model(images, training=False), tf.float32)
            classes = tf.argmax(probabilities, axis=1, output_type=tf.int64)
            return {
                "classes": classes,
                "probabilities": probabilities,
                "labels": tf.gather(self.label_names, classes),
            }

    return ImageBytesServing()
