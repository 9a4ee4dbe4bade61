"""Text worker: the worker loop around the text-emotion model."""

from collections.abc import Sequence
from typing import Protocol

from shared.bus import Job
from shared.labels import top_label
from shared.schema import TextEmotionResult, TextTask
from shared.settings import Settings
from shared.worker import Outcome


class TextScorer(Protocol):
    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """All seven label scores per text, each summing to 1."""
        ...


class TextEmotionHandler:
    kind = "text"

    def __init__(self, model: TextScorer):
        self.model = model

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        tasks = [job.task for job in jobs]
        texts = [task.text for task in tasks if isinstance(task, TextTask)]
        if len(texts) != len(tasks):
            raise TypeError("the text worker got a task of another kind")
        outcomes = []
        for task, scores in zip(tasks, self.model.predict(texts), strict=True):
            assert isinstance(task, TextTask)
            emotion, confidence = top_label(scores)
            result = TextEmotionResult(
                session_id=task.session_id,
                id=task.client_id,
                emotion=emotion,
                confidence=confidence,
                scores=scores,
                text=task.text,
                user_id=task.user_id,
                utterance_id=task.utterance_id,
            )
            outcomes.append(Outcome([result]))
        return outcomes


def load(settings: Settings) -> TextEmotionHandler:
    from workers.text.emotion_model import TextEmotionModel  # the only place the ML stack is imported

    model = TextEmotionModel.load(
        cache_dir=settings.cache_dir / "minilm", threads=settings.worker.threads, batch_size=settings.text.batch_size
    )
    return TextEmotionHandler(model)
