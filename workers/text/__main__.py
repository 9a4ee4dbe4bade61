"""``python -m workers.text [--burst]``: a text-emotion worker."""

from shared.worker import main
from workers.text.handler import load

if __name__ == "__main__":
    main("text", load)
