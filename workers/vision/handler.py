"""Vision worker: the worker loop around the vision pipeline, one session turn at a time.

A turn holds the session's inbox items since its previous turn. Live frames (``op="analyze"``) are
real-time: only the newest is analysed, and ``dropped`` counts the frames skipped since the previous
result, so ``dropped`` plus results adds up to the frames sent. Enrolment images (``op="encode"``) are
all encoded. Track ids live in the session state that the bus stores with each turn, so any replica
continues a session's tracks.
"""

from collections.abc import Sequence

from redis import Redis

from shared import schema
from shared.bus import Item, Job
from shared.labels import top_label
from shared.names import RedisNames
from shared.schema import (
    ErrorResult,
    FaceEncodingResult,
    FaceResult,
    FacesResult,
    FrameItem,
    Result,
    Timing,
    TurnTask,
)
from shared.settings import Settings
from shared.worker import Outcome
from workers.vision.decode import InvalidImage
from workers.vision.gallery import Gallery, GalleryCache
from workers.vision.interfaces import Box
from workers.vision.pipeline import BoxOutside, Face, VisionPipeline
from workers.vision.tracking import TrackState, assign_tracks


def describe(names: Sequence[str | None]) -> str:
    """The result's ``message``: "1 known face: obama", "2 faces, 1 known: biden", "no face found"."""
    if not names:
        return "no face found"
    known = [name for name in names if name]
    faces = f"{len(names)} face{'s' if len(names) != 1 else ''}"
    if not known:
        return f"{faces}, none known"
    if len(known) == len(names):
        return f"{len(known)} known face{'s' if len(known) != 1 else ''}: {', '.join(known)}"
    return f"{faces}, {len(known)} known: {', '.join(known)}"


def schema_box(box: Box) -> schema.Box:
    return schema.Box(x=box.x, y=box.y, w=box.w, h=box.h)


class VisionHandler:
    kind = "vision"

    def __init__(self, pipeline: VisionPipeline, gallery: GalleryCache, match_threshold: float):
        self.pipeline, self.gallery, self.match_threshold = pipeline, gallery, match_threshold

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [self._turn(job) for job in jobs]

    def _turn(self, job: Job) -> Outcome:
        if not isinstance(job.task, TurnTask):
            raise TypeError("the vision worker got a task that is not a session turn")
        session_id = job.task.session_id
        items = [(item, FrameItem.model_validate_json(item.meta)) for item in job.items]
        newest = max((item.n for item, meta in items if meta.op == "analyze"), default=None)
        results: list[Result] = []
        state: bytes | None = None
        for item, meta in items:
            if meta.op == "encode":
                result = self._enroll(session_id, item, meta)
            elif item.n == newest:
                enrolments_between = sum(1 for other, m in items if m.op == "encode" and other.n < item.n)
                dropped = max(0, item.n - job.last_n - 1 - enrolments_between)
                result, state = self._analyze(session_id, item, meta, job.state, dropped)
            else:
                continue
            result.timing = Timing(accepted_at=meta.accepted_at)  # latency counts from this frame's arrival
            results.append(result)
        return Outcome(results, state=state)

    def _enroll(self, session_id: str, item: Item, meta: FrameItem) -> Result:
        try:
            boxes, encodings = self.pipeline.enrollment(item.data)
        except InvalidImage as exc:
            return ErrorResult(session_id=session_id, id=meta.client_id, code="invalid_image", message=str(exc))
        return FaceEncodingResult(
            session_id=session_id,
            id=meta.client_id,
            boxes=[schema_box(box) for box in boxes],
            encodings=[encoding.tolist() for encoding in encodings],
        )

    def _analyze(
        self, session_id: str, item: Item, meta: FrameItem, state_blob: bytes, dropped: int
    ) -> tuple[Result, bytes | None]:
        """The frame's result and the session's new tracking state (None: unchanged, for a bad frame)."""
        client_boxes = [Box(b.x, b.y, b.w, b.h) for b in meta.boxes] if meta.boxes else None
        try:
            faces = self.pipeline.analyze(item.data, meta.detect, client_boxes)
        except InvalidImage as exc:
            return ErrorResult(session_id=session_id, id=meta.client_id, code="invalid_image", message=str(exc)), None
        except BoxOutside as exc:
            return ErrorResult(session_id=session_id, id=meta.client_id, code="invalid_message", message=str(exc)), None
        tracks = TrackState.load(state_blob)
        track_ids = assign_tracks(tracks, [face.box for face in faces], [face.encoding for face in faces], item.n)
        gallery = self.gallery.current() if faces else Gallery()  # one GET per frame with faces
        results = [self._face(face, track_id, gallery) for face, track_id in zip(faces, track_ids, strict=True)]
        names = [face.name for face in results]
        result = FacesResult(
            session_id=session_id,
            id=meta.client_id,
            recognized=any(names),
            message=describe(names),
            faces=results,
            frame=item.n,
            dropped=dropped,
        )
        return result, tracks.dump()

    def _face(self, face: Face, track_id: int, gallery: Gallery) -> FaceResult:
        name, distance = gallery.nearest(face.encoding, self.match_threshold)
        emotion, confidence = top_label(face.scores)
        return FaceResult(
            box=schema_box(face.box),
            name=name,
            distance=None if distance is None else round(distance, 4),
            emotion=emotion,
            confidence=confidence,
            scores=face.scores,
            track_id=track_id,
        )


def load_pipeline(settings: Settings) -> VisionPipeline:
    """The models, loaded once (the worker, and bench's bare run)."""
    # the only place the ML stack is imported
    from workers.vision.expression import FacialExpressionModel
    from workers.vision.faces import FaceAnalyzer

    finder = FaceAnalyzer(max_side=settings.vision.max_side)
    expression = FacialExpressionModel(num_threads=settings.worker.threads)
    return VisionPipeline(finder, expression, settings.vision, settings.limits.max_image_pixels)


def load(settings: Settings) -> VisionHandler:
    pipeline = load_pipeline(settings)
    redis = Redis.from_url(settings.redis.url.get_secret_value(), socket_keepalive=True)
    gallery = GalleryCache(redis, RedisNames(settings.redis.prefix))
    return VisionHandler(pipeline, gallery, settings.vision.match_threshold)
