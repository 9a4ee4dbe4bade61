"""The compared (not kept) expression model: facial_emotion_recognition 0.3.4's ``NetworkV2``.

The package's own module imports torchvision and facenet_pytorch, which we do not install, so the
small network is rewritten here with the same layer names so that its state dict loads unchanged.
Only the evaluation imports this module; the worker uses ``workers.vision.expression``.

Thread-safety: inference holds no state between calls, but torch's intra-op threads are shared by the
process; call from one thread.
"""

from typing import Final

import numpy as np
import torch
from torch import nn

from shared.labels import scores_from_probs
from workers.vision.preprocess import to_model_input
from workers.vision.weights import FER_TORCH_CHECKPOINT, PinnedWeight

# facial_emotion_recognition.EmotionRecognition.emotions, in our label names.
CLASS_ORDER: Final = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
INPUT_SIDE: Final = 48


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d(padding=1),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=0),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class NetworkV2(nn.Module):
    """48x48 grey in, 7 sigmoid outputs; four 3x3 conv blocks and two linear layers."""

    def __init__(self, width: int = 32, classes: int = 7) -> None:
        super().__init__()
        self.conv_1 = _conv_block(1, width, 1)
        self.conv_2 = _conv_block(width, 2 * width, 2)
        self.conv_3 = _conv_block(2 * width, 4 * width, 2)
        self.conv_4 = _conv_block(4 * width, 8 * width, 2)
        self.linear = nn.Sequential(
            nn.Linear(8 * width * 6 * 6, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, classes),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x))))
        scores: torch.Tensor = self.linear(x.reshape(x.shape[0], -1))
        return scores


class TorchExpressionModel:
    """Scores the seven expressions on face crops (BGR or grey uint8, any size)."""

    name = "facial-emotion-recognition-networkv2"

    def __init__(self, weight: PinnedWeight = FER_TORCH_CHECKPOINT, num_threads: int | None = 1) -> None:
        if num_threads is not None:
            # Process-wide; one thread matches the LiteRT model it is compared with.
            torch.set_num_threads(num_threads)
        checkpoint = torch.load(weight.verified_path(), map_location="cpu", weights_only=True)
        self._network = NetworkV2()
        self._network.load_state_dict(checkpoint["network"])
        self._network.eval()

    def predict(self, face_crops: list[np.ndarray]) -> list[dict[str, float]]:
        """One dict of all seven labels (summing to 1) per crop, in order.

        The network ends in independent sigmoids, so scores are those outputs renormalised to sum
        to 1 (its own package only ever took the argmax).
        """
        if not face_crops:
            return []
        batch = np.stack([to_model_input(crop, INPUT_SIDE) for crop in face_crops])[:, np.newaxis]
        with torch.inference_mode():
            outputs = self._network(torch.from_numpy(batch)).numpy()
        return [scores_from_probs(row, CLASS_ORDER) for row in outputs]
