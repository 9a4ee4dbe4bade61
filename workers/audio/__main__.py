"""``python -m workers.audio [--burst]``: an audio worker (speech-to-text, voice activity, voice expression)."""

from shared.worker import main
from workers.audio.handler import load

if __name__ == "__main__":
    main("audio", load)
