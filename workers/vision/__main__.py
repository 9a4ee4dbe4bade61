"""``python -m workers.vision [--burst]``: a vision worker (faces, recognition, facial expression)."""

from shared.worker import main
from workers.vision.handler import load

if __name__ == "__main__":
    main("vision", load)
